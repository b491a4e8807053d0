//! Helpers for the tests of the interpreter modules.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A fake interpreter at `path`: a `/bin/sh` script running `body`, made
/// executable. Parent folders are created.
pub(crate) fn fake_python(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write fake python");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}
