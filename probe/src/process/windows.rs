//! The modules (DLLs) loaded into this process (Windows).
//!
//! First a ToolHelp module snapshot of the own process; if that fails
//! (it can, transiently, with `ERROR_BAD_LENGTH` while modules load), the
//! PSAPI list `K32EnumProcessModulesEx(LIST_MODULES_ALL)`. Each module's
//! path comes from `GetModuleFileNameW` (no `MAX_PATH` limit), falling back
//! to the snapshot's own `szExePath`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::windows::ffi::OsStringExt;
use std::path::PathBuf;
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_BAD_LENGTH, HANDLE, HMODULE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Module32FirstW, Module32NextW, MODULEENTRY32W, TH32CS_SNAPMODULE,
    TH32CS_SNAPMODULE32,
};
use windows_sys::Win32::System::LibraryLoader::GetModuleFileNameW;
use windows_sys::Win32::System::ProcessStatus::{K32EnumProcessModulesEx, LIST_MODULES_ALL};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use crate::error::ProbeError;

/// The longest path Windows handles (`\\?\` paths), in UTF-16 units.
const MAX_LONG_PATH: usize = 32_768;
/// How often to retry a snapshot that failed with `ERROR_BAD_LENGTH`.
const SNAPSHOT_ATTEMPTS: usize = 8;

/// The program itself (module handle NULL) is left out, as on Linux.
pub(super) fn loaded_libraries_of_this_process() -> Result<Vec<PathBuf>, ProbeError> {
    let modules = match snapshot_modules() {
        Ok(modules) => modules,
        Err(snapshot_error) => enum_process_modules()
            .map_err(|enum_error| {
                ProbeError::LoadedLibraries(format!(
                    "the module snapshot failed ({snapshot_error}) and so did \
                     EnumProcessModulesEx ({enum_error})"
                ))
            })?
            .into_iter()
            .map(|handle| (handle, None))
            .collect(),
    };
    let program = module_path(null_mut());
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (handle, snapshot_path) in modules {
        let Some(path) = module_path(handle).or(snapshot_path) else {
            continue;
        };
        if Some(&path) == program.as_ref() {
            continue;
        }
        if seen.insert(path.clone()) {
            out.push(path);
        }
    }
    Ok(out)
}

/// Closes a handle when dropped.
struct OwnedHandle(HANDLE);

impl Drop for OwnedHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateToolhelp32Snapshot, is valid
        // (checked on creation) and is closed only here.
        unsafe { CloseHandle(self.0) };
    }
}

/// Module handles with the snapshot's path for each, in load order.
fn snapshot_modules() -> Result<Vec<(HMODULE, Option<PathBuf>)>, String> {
    let mut last_error = 0;
    for _ in 0..SNAPSHOT_ATTEMPTS {
        // SAFETY: plain flags and process id 0 (this process); the result
        // is checked against INVALID_HANDLE_VALUE before use.
        let handle =
            unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPMODULE | TH32CS_SNAPMODULE32, 0) };
        if handle == INVALID_HANDLE_VALUE {
            // SAFETY: no arguments; reads this thread's last-error value.
            last_error = unsafe { GetLastError() };
            if last_error == ERROR_BAD_LENGTH {
                continue;
            }
            break;
        }
        let snapshot = OwnedHandle(handle);
        let mut modules = Vec::new();
        let mut entry = MODULEENTRY32W {
            dwSize: std::mem::size_of::<MODULEENTRY32W>() as u32,
            ..MODULEENTRY32W::default()
        };
        // SAFETY: the snapshot handle is valid and `entry` is a properly
        // sized MODULEENTRY32W with dwSize set, as the API requires.
        let mut more = unsafe { Module32FirstW(snapshot.0, &mut entry) } != 0;
        while more {
            modules.push((entry.hModule, wide_to_path(&entry.szExePath)));
            // SAFETY: as for Module32FirstW.
            more = unsafe { Module32NextW(snapshot.0, &mut entry) } != 0;
        }
        return Ok(modules);
    }
    Err(format!(
        "CreateToolhelp32Snapshot: Windows error {last_error}"
    ))
}

/// Module handles from PSAPI.
fn enum_process_modules() -> Result<Vec<HMODULE>, String> {
    let mut handles: Vec<HMODULE> = vec![null_mut(); 256];
    loop {
        let capacity = handles.len() * std::mem::size_of::<HMODULE>();
        let mut needed: u32 = 0;
        // SAFETY: the pseudo-handle of this process needs no closing;
        // `handles` has room for `capacity` bytes and `needed` is a valid
        // out-pointer.
        let ok = unsafe {
            K32EnumProcessModulesEx(
                GetCurrentProcess(),
                handles.as_mut_ptr(),
                capacity as u32,
                &mut needed,
                LIST_MODULES_ALL,
            )
        };
        if ok == 0 {
            // SAFETY: no arguments; reads this thread's last-error value.
            let code = unsafe { GetLastError() };
            return Err(format!("Windows error {code}"));
        }
        let needed = needed as usize;
        if needed <= capacity {
            handles.truncate(needed / std::mem::size_of::<HMODULE>());
            return Ok(handles);
        }
        // Modules were loaded meanwhile: grow and ask again.
        handles.resize(needed / std::mem::size_of::<HMODULE>() + 16, null_mut());
    }
}

/// The full path of a module of this process (NULL: the program).
fn module_path(module: HMODULE) -> Option<PathBuf> {
    let mut buffer: Vec<u16> = vec![0; 512];
    loop {
        // SAFETY: `buffer` holds `buffer.len()` UTF-16 units; the function
        // writes at most that many and returns how many it wrote.
        let len = unsafe { GetModuleFileNameW(module, buffer.as_mut_ptr(), buffer.len() as u32) }
            as usize;
        if len == 0 {
            return None;
        }
        if len < buffer.len() {
            return Some(PathBuf::from(OsString::from_wide(&buffer[..len])));
        }
        // Truncated: the result filled the buffer.
        if buffer.len() >= MAX_LONG_PATH {
            return None;
        }
        buffer.resize(buffer.len() * 4, 0);
    }
}

/// A NUL-terminated UTF-16 array as a path; `None` when empty.
fn wide_to_path(wide: &[u16]) -> Option<PathBuf> {
    let len = wide.iter().position(|&c| c == 0).unwrap_or(wide.len());
    (len > 0).then(|| PathBuf::from(OsString::from_wide(&wide[..len])))
}
