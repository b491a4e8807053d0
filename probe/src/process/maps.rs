//! `/proc/PID/maps`: which shared objects a process has mapped.
//!
//! Each line is `start-end perms offset dev inode pathname`, the pathname
//! padded with spaces and absent for anonymous memory. The kernel writes a
//! newline inside a path as `\012` and appends ` (deleted)` when the file was
//! unlinked after it was mapped. Lines are in address order; the kernel does
//! not record the order in which files were loaded.
//!
//! Everything here is pure: it parses bytes and never touches the file
//! system, so the tests feed it canned text.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the kernel appends to the path of an unlinked file.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// One file-backed mapping (a line with a path and a non-zero inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// The path, with ` (deleted)` stripped and `\012` turned back into a
    /// newline.
    pub path: PathBuf,
    /// `r`/`-`, `w`/`-`, `x`/`-`, `p` (private) or `s` (shared).
    pub perms: [u8; 4],
    pub inode: u64,
    /// The file was unlinked after it was mapped (` (deleted)`).
    pub deleted: bool,
}

impl Mapping {
    pub fn executable(&self) -> bool {
        self.perms[2] == b'x'
    }

    pub fn private(&self) -> bool {
        self.perms[3] == b'p'
    }
}

/// One shared object mapped into a process, first mapping first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MappedObject {
    pub path: PathBuf,
    /// The file was unlinked (or replaced, e.g. by a package upgrade) after
    /// it was loaded: the process runs the old contents, which may no
    /// longer exist at `path`.
    pub deleted: bool,
}

/// The file-backed mappings of a maps file, in address order. Anonymous
/// memory, pseudo-mappings (`[heap]`, `[stack]`, `[vdso]`, `[vvar]`,
/// `[vsyscall]`, `[anon:name]`) and malformed lines are left out.
pub(crate) fn parse_maps(text: &[u8]) -> Vec<Mapping> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mapping> {
    let mut rest = line;
    let mut fields: [&[u8]; 5] = [&[]; 5];
    for field in &mut fields {
        rest = trim_start(rest);
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, _offset, _dev, inode] = fields;
    if !range.contains(&b'-') {
        return None;
    }
    let perms: [u8; 4] = perms.try_into().ok()?;
    let inode: u64 = std::str::from_utf8(inode).ok()?.parse().ok()?;
    // The path starts after the padding; trailing spaces belong to it.
    let path = trim_start(rest);
    if inode == 0 || !path.starts_with(b"/") {
        return None;
    }
    let (path, deleted) = match path.strip_suffix(DELETED_SUFFIX) {
        Some(stripped) => (stripped, true),
        None => (path, false),
    };
    Some(Mapping {
        path: PathBuf::from(OsStr::from_bytes(&unescape_newlines(path))),
        perms,
        inode,
        deleted,
    })
}

/// Strip the ` (deleted)` the kernel appends to the target of an unlinked
/// file's link (`/proc/PID/exe`), as [`parse_maps`] does for mappings.
pub(crate) fn strip_deleted(path: PathBuf) -> PathBuf {
    match path.as_os_str().as_bytes().strip_suffix(DELETED_SUFFIX) {
        Some(stripped) => PathBuf::from(OsStr::from_bytes(stripped)),
        None => path,
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// The kernel escapes only the newline in paths (`\012`); a literal
/// backslash is not escaped, so a path that really contains the four
/// characters `\012` cannot be told apart and is decoded as a newline too.
fn unescape_newlines(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i..].starts_with(b"\\012") {
            out.push(b'\n');
            i += 4;
        } else {
            out.push(path[i]);
            i += 1;
        }
    }
    out
}

/// The shared objects among the mappings, each once, in the order of their
/// first mapping, leaving out `executable` (the program itself).
///
/// A file counts as a shared object when it is mapped privately (the
/// loader never maps code shared) and either one of its mappings is
/// executable or its name looks like a shared object (`*.so`, `*.so.*`;
/// this keeps code-less libraries such as `libicudata.so` and a library
/// caught half-loaded). So data files mapped shared (`numpy.memmap`,
/// caiclust's own reader), locale archives, fonts, `/dev/shm` segments and
/// `memfd:` regions (which are not files on disk) are left out.
pub(crate) fn shared_objects(mappings: &[Mapping], executable: Option<&Path>) -> Vec<MappedObject> {
    // A file qualifies if any of its mappings does; decide per path first.
    let mut qualifies: HashMap<&Path, bool> = HashMap::new();
    for m in mappings {
        let this = m.private() && (m.executable() || looks_like_shared_object(&m.path));
        *qualifies.entry(m.path.as_path()).or_insert(false) |= this;
    }
    let mut seen: HashSet<&Path> = HashSet::new();
    let mut out = Vec::new();
    for m in mappings {
        let path = m.path.as_path();
        if executable == Some(path)
            || path.as_os_str().as_bytes().starts_with(b"/memfd:")
            || !qualifies.get(path).copied().unwrap_or(false)
            || !seen.insert(path)
        {
            continue;
        }
        out.push(MappedObject {
            path: m.path.clone(),
            deleted: m.deleted,
        });
    }
    out
}

/// `libc.so.6`, `_ssl.cpython-311-x86_64-linux-gnu.so`, `ld-linux-x86-64.so.2`.
fn looks_like_shared_object(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    let name = name.as_bytes();
    name.ends_with(b".so") || name.windows(4).any(|w| w == b".so.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON_MAPS: &str = "\
5581c6a00000-5581c6a3c000 r--p 00000000 fe:00 1311                       /usr/bin/python3.11
5581c6a3c000-5581c6d2a000 r-xp 0003c000 fe:00 1311                       /usr/bin/python3.11
5581c7d6c000-5581c7f3a000 rw-p 00000000 00:00 0                          [heap]
7f0e2a000000-7f0e2a021000 rw-p 00000000 00:00 0 
7f0e2b2e5000-7f0e2b2e9000 r--p 00000000 fe:00 90211                      /opt/my envs/site-packages/numpy.libs/libscipy_openblas64_-ff651d7f.so
7f0e2b2e9000-7f0e2d1c6000 r-xp 00004000 fe:00 90211                      /opt/my envs/site-packages/numpy.libs/libscipy_openblas64_-ff651d7f.so
7f0e2d400000-7f0e2d500000 r-xp 00000000 fe:00 777                        /tmp/libgomp-a34b3233.so.1.0.0 (deleted)
7f0e2d600000-7f0e2d700000 r--s 00000000 fe:00 555                        /data/movie.mmap
7f0e2d700000-7f0e2d800000 rw-s 00000000 00:01 1024                       /memfd:jit (deleted)
7f0e2d800000-7f0e2d810000 r-xs 00000000 00:01 1025                       /memfd:libffi (deleted)
7f0e2d810000-7f0e2d820000 r--p 00000000 fe:00 316534                     /usr/lib/locale/C.utf8/LC_CTYPE
7f0e2d820000-7f0e2d830000 r--p 00000000 fe:00 4242                       /usr/lib/x86_64-linux-gnu/libicudata.so.72.1
7f0e2d900000-7f0e2d926000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0e2d926000-7f0e2da7c000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0e2db00000-7f0e2db10000 r-xp 00000000 fe:00 9999                       /tmp/odd\\012name/liba.so
7ffd1c5a0000-7ffd1c5c1000 rw-p 00000000 00:00 0                          [stack]
7ffd1c5f4000-7ffd1c5f8000 r--p 00000000 00:00 0                          [vvar]
7ffd1c5f8000-7ffd1c5fa000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
7f0e2dc00000-7f0e2dc10000 rw-p 00000000 00:00 0                          [anon:glibc.malloc]
not a maps line
";

    fn paths(objects: &[MappedObject]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o.path.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keeps_file_backed_mappings_only() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        assert!(maps.iter().all(|m| m.inode != 0));
        assert!(maps.iter().all(|m| m.path.is_absolute()));
        assert!(!maps
            .iter()
            .any(|m| m.path.to_string_lossy().starts_with('[')));
        assert_eq!(maps.len(), 13, "{maps:#?}");
    }

    #[test]
    fn paths_with_spaces_survive() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        assert_eq!(
            maps[2].path,
            Path::new("/opt/my envs/site-packages/numpy.libs/libscipy_openblas64_-ff651d7f.so")
        );
    }

    #[test]
    fn deleted_suffix_is_stripped_and_remembered() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        let gomp = maps
            .iter()
            .find(|m| m.path.ends_with("libgomp-a34b3233.so.1.0.0"))
            .expect("libgomp");
        assert!(gomp.deleted);
        assert_eq!(gomp.path, Path::new("/tmp/libgomp-a34b3233.so.1.0.0"));
    }

    #[test]
    fn escaped_newline_is_decoded() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        assert!(maps
            .iter()
            .any(|m| m.path == Path::new("/tmp/odd\nname/liba.so")));
    }

    #[test]
    fn shared_objects_deduped_in_first_mapping_order_without_the_program() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        let objects = shared_objects(&maps, Some(Path::new("/usr/bin/python3.11")));
        assert_eq!(
            paths(&objects),
            [
                "/opt/my envs/site-packages/numpy.libs/libscipy_openblas64_-ff651d7f.so",
                "/tmp/libgomp-a34b3233.so.1.0.0",
                "/usr/lib/x86_64-linux-gnu/libicudata.so.72.1",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/tmp/odd\nname/liba.so",
            ]
        );
        assert_eq!(
            objects.iter().map(|o| o.deleted).collect::<Vec<_>>(),
            [false, true, false, false, false]
        );
    }

    #[test]
    fn the_program_is_kept_when_not_named() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        let objects = shared_objects(&maps, None);
        assert_eq!(objects[0].path, Path::new("/usr/bin/python3.11"));
    }

    #[test]
    fn shared_data_locale_and_memfd_are_not_libraries() {
        let maps = parse_maps(PYTHON_MAPS.as_bytes());
        let objects = paths(&shared_objects(&maps, None));
        for absent in [
            "/data/movie.mmap",
            "/memfd:jit",
            "/memfd:libffi",
            "/usr/lib/locale/C.utf8/LC_CTYPE",
        ] {
            assert!(!objects.iter().any(|p| p == absent), "{absent} kept");
        }
    }

    #[test]
    fn non_utf8_paths_are_kept_byte_for_byte() {
        let text = b"7f0e2d900000-7f0e2d926000 r-xp 00000000 fe:00 7 /opt/\xff\xfe/libx.so\n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 1);
        assert_eq!(
            maps[0].path.as_os_str().as_bytes(),
            b"/opt/\xff\xfe/libx.so"
        );
    }

    #[test]
    fn deleted_link_target() {
        assert_eq!(
            strip_deleted(PathBuf::from("/usr/bin/python3.11 (deleted)")),
            Path::new("/usr/bin/python3.11")
        );
        assert_eq!(strip_deleted(PathBuf::from("/a b")), Path::new("/a b"));
    }

    #[test]
    fn empty_and_truncated_input() {
        assert!(parse_maps(b"").is_empty());
        assert!(parse_maps(b"7f0e2d900000-7f0e2d926000 r-xp 00000000").is_empty());
        assert!(parse_maps(b"7f0e2d900000-7f0e2d926000 r-xp 00000000 fe:00 x /a.so").is_empty());
        assert!(parse_maps(b"\n\n\n").is_empty());
    }
}
