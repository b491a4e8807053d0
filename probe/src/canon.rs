//! Canonical paths fit to show: [`canonicalize`] is
//! `std::fs::canonicalize` (links and `..` resolved), but on Windows it
//! gives the plain path (`C:\lib\x.dll`) instead of the verbatim one
//! (`\\?\C:\lib\x.dll`) that std returns, whenever the plain form names the
//! same file. Users never type `\\?\`, and it showed on every path of a
//! report (issue #16). The rule is the one of the `dunce` crate, written
//! here: a verbatim disk or UNC path is simplified only when Win32 would
//! read its plain form back unchanged (short enough, no reserved device
//! name, no component that Win32 rewrites or refuses); anything else stays
//! verbatim, which is always correct.

use std::io;
use std::path::{Path, PathBuf};

/// Longest plain path Win32 takes without the verbatim prefix (`MAX_PATH`
/// less the terminating NUL).
const MAX_PLAIN: usize = 259;

/// `std::fs::canonicalize`, with Windows' verbatim prefix dropped where it
/// is not needed (see the module docs). Elsewhere the same as std.
pub fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let real = std::fs::canonicalize(path)?;
    if cfg!(windows) {
        if let Some(plain) = real.to_str().and_then(plain_windows_path) {
            return Ok(PathBuf::from(plain));
        }
    }
    Ok(real)
}

/// The plain form of a verbatim Windows path (`\\?\C:\x` → `C:\x`,
/// `\\?\UNC\srv\share\x` → `\\srv\share\x`), or `None` when it is not
/// verbatim or its plain form would not name the same file. Pure, so
/// tested on every platform.
pub(crate) fn plain_windows_path(verbatim: &str) -> Option<String> {
    let (plain, rest) = if let Some(unc) = verbatim.strip_prefix(r"\\?\UNC\") {
        (format!(r"\\{unc}"), unc)
    } else {
        let disk = verbatim.strip_prefix(r"\\?\")?;
        let mut chars = disk.chars();
        let (letter, colon, slash) = (chars.next()?, chars.next()?, chars.next());
        if !letter.is_ascii_alphabetic() || colon != ':' || !matches!(slash, None | Some('\\')) {
            return None;
        }
        (disk.to_owned(), disk.get(2..)?)
    };
    if plain.len() > MAX_PLAIN {
        return None;
    }
    let components = rest.split('\\').filter(|c| !c.is_empty());
    for c in components {
        if !plain_component(c) {
            return None;
        }
    }
    Some(plain)
}

/// A path component that Win32 reads as it is.
fn plain_component(c: &str) -> bool {
    if c == "." || c == ".." || c.ends_with('.') || c.ends_with(' ') {
        return false;
    }
    if c.chars().any(|ch| ch < ' ' || r#"<>:"/|?*"#.contains(ch)) {
        return false;
    }
    !reserved_device(c)
}

/// `CON`, `NUL`, `COM1`, `lpt9.txt`…: Win32 opens the device, whatever the
/// folder and the extension.
fn reserved_device(c: &str) -> bool {
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            let (base, digit) = upper.split_at(upper.len().saturating_sub(1));
            matches!(base, "COM" | "LPT")
                && matches!(digit, "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_unc_paths_lose_the_verbatim_prefix() {
        assert_eq!(
            plain_windows_path(r"\\?\C:\lib\vcomp140.dll").as_deref(),
            Some(r"C:\lib\vcomp140.dll")
        );
        assert_eq!(plain_windows_path(r"\\?\Z:\").as_deref(), Some(r"Z:\"));
        assert_eq!(plain_windows_path(r"\\?\z:").as_deref(), Some("z:"));
        assert_eq!(
            plain_windows_path(r"\\?\UNC\server\share\a b\x.pyd").as_deref(),
            Some(r"\\server\share\a b\x.pyd")
        );
    }

    #[test]
    fn paths_win32_would_read_differently_stay_verbatim() {
        for p in [
            r"C:\already\plain",
            r"\\?\Volume{0b1c}\x",
            r"\\?\C:\a\..\b",
            r"\\?\C:\a\.\b",
            r"\\?\C:\trailing dot.",
            r"\\?\C:\trailing space ",
            r"\\?\C:\dir\nul",
            r"\\?\C:\dir\Com1.txt",
            r"\\?\C:\dir\a?b",
            r"\\?\C:\dir\a:stream",
            r"\\?\C:x",
        ] {
            assert_eq!(plain_windows_path(p), None, "{p}");
        }
        let long = format!(r"\\?\C:\{}", "a".repeat(300));
        assert_eq!(plain_windows_path(&long), None);
        // COM0 and COM10 are ordinary names.
        assert!(plain_windows_path(r"\\?\C:\COM0\COM10").is_some());
    }

    #[test]
    fn canonicalize_gives_a_plain_absolute_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = canonicalize(dir.path()).expect("canonicalize");
        assert!(real.is_absolute());
        assert!(
            !real.to_string_lossy().starts_with(r"\\?\"),
            "{}",
            real.display()
        );
        assert!(real.is_dir());
    }
}
