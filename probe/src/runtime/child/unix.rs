//! Is a library already loaded in the query child? (Unix: `dlopen` with
//! `RTLD_NOLOAD`.)

use std::ffi::c_int;

/// Is an object loaded under `name` (its file name or, on Linux, its
/// SONAME), so that the loader would reuse it for a `DT_NEEDED` of that
/// name? The handle taken to check is kept: the object stays loaded
/// anyway.
pub(super) fn already_loaded(name: &str) -> bool {
    let flags: c_int = libc::RTLD_NOLOAD | libc::RTLD_LAZY;
    // SAFETY: with RTLD_NOLOAD nothing new is loaded and no constructor
    // runs; at most the reference count of an already loaded object goes
    // up.
    match unsafe { libloading::os::unix::Library::open(Some(name), flags) } {
        Ok(handle) => {
            // Not closed: the object was loaded before and stays loaded.
            std::mem::forget(handle);
            true
        }
        Err(_) => false,
    }
}
