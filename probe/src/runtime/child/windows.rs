//! Is a library already loaded in the query child? (Windows:
//! `GetModuleHandleExW`.)

/// Is a module loaded under `name`, so that the loader would reuse it?
pub(super) fn already_loaded(name: &str) -> bool {
    // Only a name: a path would match one file, not what the loader reuses.
    if name.contains(['/', '\\']) {
        return false;
    }
    libloading::os::windows::Library::open_already_loaded(name).is_ok()
}
