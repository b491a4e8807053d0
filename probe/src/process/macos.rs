//! The images dyld has loaded into this process (macOS).

use std::collections::HashSet;
use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::ProbeError;

// From <mach-o/dyld.h>, in libSystem, which every macOS program links.
extern "C" {
    fn _dyld_image_count() -> u32;
    fn _dyld_get_image_name(image_index: u32) -> *const c_char;
}

/// Image 0 is the main executable (dyld documents this) and is left out,
/// as on Linux. Another thread may load or unload images meanwhile: an
/// index that became invalid yields NULL and is skipped.
pub(super) fn loaded_libraries_of_this_process() -> Result<Vec<PathBuf>, ProbeError> {
    // SAFETY: no arguments and no preconditions; dyld is part of every
    // macOS process.
    let count = unsafe { _dyld_image_count() };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for index in 1..count {
        // SAFETY: dyld accepts any index and returns NULL for one that is
        // out of range (possible if an image was unloaded since the count).
        let name = unsafe { _dyld_get_image_name(index) };
        if name.is_null() {
            continue;
        }
        // SAFETY: a non-NULL name points at a NUL-terminated string owned by
        // dyld that stays valid while the image is loaded; it is copied
        // right away. (dyld's image list is not locked against a concurrent
        // dlclose of that very image; that is the documented limit of this
        // API.)
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let path = PathBuf::from(OsStr::from_bytes(&bytes));
        if seen.insert(path.clone()) {
            out.push(path);
        }
    }
    Ok(out)
}
