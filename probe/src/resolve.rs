//! Loader emulation: where ld.so, dyld or the Windows loader would find a
//! dependency, without running any of them.
//!
//! * ELF (glibc `ld.so`): a name with a slash is a path; otherwise
//!   `DT_RPATH` of the requester and its loaders (only when the requester
//!   has no `DT_RUNPATH`; a loader with one contributes no `DT_RPATH` but
//!   the walk goes on past it), `LD_LIBRARY_PATH`, the requester's `DT_RUNPATH`,
//!   `/etc/ld.so.cache`, then the default folders. `$ORIGIN` is the folder
//!   the requester was found in. Candidates of another architecture are
//!   skipped, as ld.so does.
//! * Mach-O (dyld): `@loader_path`, `@executable_path`, `@rpath` expanded
//!   through the `LC_RPATH` entries of the requester and its loaders,
//!   `DYLD_LIBRARY_PATH` by leaf name, absolute paths, then
//!   `DYLD_FALLBACK_LIBRARY_PATH`.
//! * PE (Windows, the safe search order Python ≥ 3.8 uses for extension
//!   modules): the requester's folder, folders that packages add with
//!   `os.add_dll_directory` (delvewheel's `<dist>.libs`, a package's
//!   `.libs`), the interpreter's folder; names are case-insensitive.
//!   System DLLs are not present on a Linux host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::facts::OsFamily;

/// The ld.so cache file [`Loader::for_host`] names on Linux.
pub(crate) const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// The caller's side of a search: told of every path the loader is about
/// to look for, and asked whether an existing file is acceptable (the
/// right format and architecture).
pub(crate) trait Candidates {
    /// The loader is about to test `path`; its folder is looked in.
    fn looking_for(&mut self, _path: &Path) {}
    /// Whether the existing file `path` would be mapped.
    fn accept(&mut self, path: &Path) -> bool;
}

impl<F: FnMut(&Path) -> bool> Candidates for F {
    fn accept(&mut self, path: &Path) -> bool {
        self(path)
    }
}

/// Where and how a dependency was found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolution {
    /// The path the loader opens (may be a symlink).
    pub path: PathBuf,
    /// The search rule that found it, e.g. `RUNPATH $ORIGIN/../numpy.libs`.
    pub rule: String,
}

/// One loader in the chain of images that led to a request, for rpath
/// inheritance (ELF `DT_RPATH`, Mach-O `LC_RPATH`).
#[derive(Debug, Clone)]
pub(crate) struct LoaderFrame {
    /// The folder the image was found in (`$ORIGIN`, `@loader_path`).
    pub origin: PathBuf,
    pub rpath: Vec<String>,
    pub has_runpath: bool,
}

/// The search configuration of one loader. It serialises (for the scan
/// cache's key) without the parsed ld.so cache, whose file is named by
/// `ld_cache_file` instead.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Loader {
    pub target: Option<OsFamily>,
    pub ld_library_path: Vec<PathBuf>,
    /// The ld.so cache, filled from `ld_cache_file` by
    /// [`Loader::load_ld_cache`].
    #[serde(skip)]
    pub ld_cache: HashMap<String, Vec<PathBuf>>,
    pub ld_cache_file: Option<PathBuf>,
    pub default_dirs: Vec<PathBuf>,
    pub dyld_library_path: Vec<PathBuf>,
    pub dyld_fallback_path: Vec<PathBuf>,
    pub executable_dir: Option<PathBuf>,
    /// Windows: folders added with `os.add_dll_directory` and similar.
    pub dll_dirs: Vec<PathBuf>,
}

impl Loader {
    /// A loader for this host's own binaries, configured from `env`.
    pub fn for_host(
        env: &std::collections::BTreeMap<String, String>,
        executable_dir: Option<PathBuf>,
    ) -> Self {
        let split = |name: &str| -> Vec<PathBuf> {
            env.get(name)
                .map(|v| {
                    std::env::split_paths(v)
                        .filter(|p| !p.as_os_str().is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let target = OsFamily::current();
        let mut loader = Loader {
            target: Some(target),
            executable_dir,
            ..Loader::default()
        };
        match target {
            OsFamily::Linux | OsFamily::Other => {
                loader.ld_library_path = split("LD_LIBRARY_PATH");
                loader.ld_cache_file = Some(PathBuf::from(LD_SO_CACHE));
                loader.default_dirs = default_elf_dirs();
            }
            OsFamily::Macos => {
                loader.dyld_library_path = split("DYLD_LIBRARY_PATH");
                loader.dyld_fallback_path = split("DYLD_FALLBACK_LIBRARY_PATH");
                if loader.dyld_fallback_path.is_empty() {
                    loader.dyld_fallback_path = vec!["/usr/local/lib".into(), "/usr/lib".into()];
                }
            }
            OsFamily::Windows => {
                loader.dll_dirs = split("PATH");
            }
        }
        loader
    }

    /// Read and parse `ld_cache_file` into `ld_cache`, unless already
    /// done. A scan does this as it starts: a scan answered from the
    /// cache never pays for it.
    pub fn load_ld_cache(&mut self) {
        if let (Some(file), true) = (&self.ld_cache_file, self.ld_cache.is_empty()) {
            self.ld_cache = std::fs::read(file)
                .map(|b| parse_ld_so_cache(&b))
                .unwrap_or_default();
        }
    }

    /// A loader for a foreign tree: only paths inside the tree resolve.
    pub fn for_tree(target: OsFamily) -> Self {
        Loader {
            target: Some(target),
            ..Loader::default()
        }
    }

    /// Find `request` for an image at `requester` (whose loaders, nearest
    /// first, are `chain`). `candidates` hears of every path tried and
    /// rejects files of the wrong architecture or format.
    pub fn resolve(
        &self,
        request: &str,
        requester: &LoaderFrame,
        chain: &[LoaderFrame],
        runpath: &[String],
        candidates: &mut dyn Candidates,
    ) -> Option<Resolution> {
        match self.target {
            Some(OsFamily::Macos) => self.resolve_macho(request, requester, chain, candidates),
            Some(OsFamily::Windows) => self.resolve_pe(request, requester, candidates),
            _ => self.resolve_elf(request, requester, chain, runpath, candidates),
        }
    }

    fn resolve_elf(
        &self,
        request: &str,
        requester: &LoaderFrame,
        chain: &[LoaderFrame],
        runpath: &[String],
        candidates: &mut dyn Candidates,
    ) -> Option<Resolution> {
        if request.contains('/') {
            let path = if Path::new(request).is_absolute() {
                PathBuf::from(request)
            } else {
                requester.origin.join(request)
            };
            candidates.looking_for(&path);
            return (path.is_file() && candidates.accept(&path)).then(|| Resolution {
                path,
                rule: "path in NEEDED".into(),
            });
        }
        let mut try_dir = |dir: &Path, rule: String| -> Option<Resolution> {
            let candidate = dir.join(request);
            candidates.looking_for(&candidate);
            (candidate.is_file() && candidates.accept(&candidate)).then_some(Resolution {
                path: candidate,
                rule,
            })
        };
        if !requester.has_runpath {
            for frame in std::iter::once(requester).chain(chain.iter()) {
                if frame.has_runpath {
                    // An image with DT_RUNPATH has its DT_RPATH ignored,
                    // but the walk goes on to its own loaders (glibc's
                    // `_dl_map_object` follows `l_loader` to the end).
                    continue;
                }
                for entry in &frame.rpath {
                    let dir = expand_origin(entry, &frame.origin);
                    if let Some(r) = try_dir(&dir, format!("RPATH {entry}")) {
                        return Some(r);
                    }
                }
            }
        }
        for dir in &self.ld_library_path {
            if let Some(r) = try_dir(dir, format!("LD_LIBRARY_PATH {}", dir.display())) {
                return Some(r);
            }
        }
        for entry in runpath {
            let dir = expand_origin(entry, &requester.origin);
            if let Some(r) = try_dir(&dir, format!("RUNPATH {entry}")) {
                return Some(r);
            }
        }
        if let Some(paths) = self.ld_cache.get(request) {
            for path in paths {
                if let Some(dir) = path.parent() {
                    if path.file_name().is_some_and(|n| n == request) {
                        if let Some(r) = try_dir(dir, "/etc/ld.so.cache".into()) {
                            return Some(r);
                        }
                    }
                }
            }
        }
        for dir in &self.default_dirs {
            if let Some(r) = try_dir(dir, format!("default folder {}", dir.display())) {
                return Some(r);
            }
        }
        None
    }

    fn resolve_macho(
        &self,
        request: &str,
        requester: &LoaderFrame,
        chain: &[LoaderFrame],
        candidates: &mut dyn Candidates,
    ) -> Option<Resolution> {
        let leaf = crate::fingerprint::base_name(request);
        let mut try_path = |path: PathBuf, rule: String| -> Option<Resolution> {
            candidates.looking_for(&path);
            (path.is_file() && candidates.accept(&path)).then_some(Resolution { path, rule })
        };
        for dir in &self.dyld_library_path {
            if let Some(r) = try_path(
                dir.join(leaf),
                format!("DYLD_LIBRARY_PATH {}", dir.display()),
            ) {
                return Some(r);
            }
        }
        if let Some(rest) = request.strip_prefix("@loader_path/") {
            return try_path(
                requester.origin.join(rest),
                format!("@loader_path = {}", requester.origin.display()),
            );
        }
        if let Some(rest) = request.strip_prefix("@executable_path/") {
            let dir = self.executable_dir.as_ref()?;
            return try_path(
                dir.join(rest),
                format!("@executable_path = {}", dir.display()),
            );
        }
        if let Some(rest) = request.strip_prefix("@rpath/") {
            for frame in std::iter::once(requester).chain(chain.iter()) {
                for entry in &frame.rpath {
                    let dir = if let Some(r) = entry.strip_prefix("@loader_path") {
                        PathBuf::from(format!("{}{}", frame.origin.display(), r))
                    } else if let Some(r) = entry.strip_prefix("@executable_path") {
                        match &self.executable_dir {
                            Some(d) => PathBuf::from(format!("{}{}", d.display(), r)),
                            None => continue,
                        }
                    } else {
                        PathBuf::from(entry)
                    };
                    if let Some(r) =
                        try_path(dir.join(rest), format!("@rpath via LC_RPATH {entry}"))
                    {
                        return Some(r);
                    }
                }
            }
            return None;
        }
        if Path::new(request).is_absolute() {
            if let Some(r) = try_path(PathBuf::from(request), "absolute install name".into()) {
                return Some(r);
            }
        }
        for dir in &self.dyld_fallback_path {
            if let Some(r) = try_path(
                dir.join(leaf),
                format!("DYLD_FALLBACK_LIBRARY_PATH {}", dir.display()),
            ) {
                return Some(r);
            }
        }
        None
    }

    fn resolve_pe(
        &self,
        request: &str,
        requester: &LoaderFrame,
        candidates: &mut dyn Candidates,
    ) -> Option<Resolution> {
        let mut dirs: Vec<(&Path, &str)> =
            vec![(requester.origin.as_path(), "the module's folder")];
        for d in &self.dll_dirs {
            dirs.push((d.as_path(), "DLL folder"));
        }
        if let Some(d) = &self.executable_dir {
            dirs.push((d.as_path(), "the interpreter's folder"));
        }
        for (dir, why) in dirs {
            candidates.looking_for(&dir.join(request));
            if let Some(name) = find_case_insensitive(dir, request) {
                let path = dir.join(name);
                if candidates.accept(&path) {
                    return Some(Resolution {
                        path,
                        rule: format!("{why} {}", dir.display()),
                    });
                }
            }
        }
        None
    }
}

/// The real name of the file in `dir` whose name equals `name` ignoring
/// ASCII case: the exact spelling when such a file exists, else the first
/// listed. The folder is always listed, because on a case-insensitive
/// filesystem (NTFS, APFS) `dir.join(name)` exists under any spelling, and
/// the name shown must be the file's own (`vcomp140.dll`, not the
/// `VCOMP140.DLL` an import table asks for).
fn find_case_insensitive(dir: &Path, name: &str) -> Option<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // A folder that cannot be listed may still be searchable.
        return dir.join(name).is_file().then(|| name.to_owned());
    };
    let mut folded = None;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if !file_name.eq_ignore_ascii_case(name) || !entry.path().is_file() {
            continue;
        }
        if file_name == name {
            return Some(name.to_owned());
        }
        folded.get_or_insert_with(|| file_name.into_owned());
    }
    folded
}

/// Replace `$ORIGIN` / `${ORIGIN}` with the requester's folder.
fn expand_origin(entry: &str, origin: &Path) -> PathBuf {
    let o = origin.to_string_lossy();
    PathBuf::from(entry.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
}

/// The trusted folders glibc searches last.
fn default_elf_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let triplet = match std::env::consts::ARCH {
        "x86_64" => Some("x86_64-linux-gnu"),
        "aarch64" => Some("aarch64-linux-gnu"),
        "x86" => Some("i386-linux-gnu"),
        "powerpc64" => Some("powerpc64le-linux-gnu"),
        "s390x" => Some("s390x-linux-gnu"),
        _ => None,
    };
    for base in ["/lib", "/usr/lib"] {
        if let Some(t) = triplet {
            dirs.push(PathBuf::from(format!("{base}/{t}")));
        }
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

const OLD_CACHE_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_CACHE_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";

/// Parse `/etc/ld.so.cache` (old and new glibc formats) into
/// name → paths, keeping entries for this host's architecture first.
pub(crate) fn parse_ld_so_cache(bytes: &[u8]) -> HashMap<String, Vec<PathBuf>> {
    let mut map: HashMap<String, Vec<PathBuf>> = HashMap::new();
    let u32_at = |off: usize| -> Option<u32> {
        bytes
            .get(off..off.checked_add(4)?)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let cstr_at = |off: usize| -> Option<String> {
        let rest = bytes.get(off..)?;
        let end = memchr::memchr(0, rest)?;
        std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
    };
    let mut start = 0usize;
    if bytes.starts_with(OLD_CACHE_MAGIC) {
        let Some(n) = u32_at(12) else { return map };
        let Some(old_len) = (n as usize).checked_mul(12).and_then(|v| v.checked_add(16)) else {
            return map;
        };
        start = (old_len + 7) & !7;
    }
    let Some(header) = bytes.get(start..) else {
        return map;
    };
    if !header.starts_with(NEW_CACHE_MAGIC) {
        return map;
    }
    let Some(nlibs) = u32_at(start + 20) else {
        return map;
    };
    let wanted = host_cache_flag();
    let entries_at = start + 48;
    for i in 0..nlibs as usize {
        let Some(off) = i.checked_mul(24).and_then(|v| v.checked_add(entries_at)) else {
            break;
        };
        let (Some(flags), Some(key), Some(value)) = (u32_at(off), u32_at(off + 4), u32_at(off + 8))
        else {
            break;
        };
        let (Some(name), Some(path)) = (cstr_at(key as usize), cstr_at(value as usize)) else {
            continue;
        };
        let is_libc6 = flags & 0xff == 0x03 || flags & 0xff == 0x01;
        if is_libc6 && wanted.is_none_or(|w| flags & 0xff00 == w) {
            map.entry(name).or_default().push(PathBuf::from(path));
        }
    }
    map
}

/// The ld.so.cache architecture flag of this host (`FLAG_X8664_LIB64`, ...).
fn host_cache_flag() -> Option<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Some(0x0300),
        "aarch64" => Some(0x0a00),
        "powerpc64" => Some(0x0500),
        "s390x" => Some(0x0400),
        "riscv64" => Some(0x1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_this_hosts_ld_so_cache() {
        // The host's own cache is the oracle: ldconfig -p lists the same.
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            if cfg!(target_os = "linux") {
                panic!("/etc/ld.so.cache unreadable on Linux");
            }
            return;
        };
        let map = parse_ld_so_cache(&bytes);
        let libc = map.get("libc.so.6").expect("libc.so.6 in the cache");
        assert!(libc[0].to_string_lossy().contains("libc.so.6"));
        let out = std::process::Command::new("ldconfig").arg("-p").output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            let listed = text.lines().filter(|l| l.contains("=>")).count();
            let ours: usize = map.values().map(Vec::len).sum();
            assert!(
                ours > 0 && ours <= listed,
                "ours {ours} vs ldconfig {listed}"
            );
        }
    }

    #[test]
    fn garbage_cache_is_empty() {
        assert!(parse_ld_so_cache(b"").is_empty());
        assert!(parse_ld_so_cache(b"glibc-ld.so.cache1.1\xff\xff\xff\xff").is_empty());
        assert!(parse_ld_so_cache(b"ld.so-1.7.0\0\xff\xff\xff\xff").is_empty());
    }

    #[test]
    fn origin_expands() {
        assert_eq!(
            expand_origin("$ORIGIN/../numpy.libs", Path::new("/sp/numpy/core")),
            PathBuf::from("/sp/numpy/core/../numpy.libs")
        );
        assert_eq!(
            expand_origin("${ORIGIN}", Path::new("/a")),
            PathBuf::from("/a")
        );
    }

    #[test]
    fn elf_rpath_before_ld_library_path_before_runpath() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join("libx.so"), b"x").expect("write");
        }
        let loader = Loader {
            target: Some(OsFamily::Linux),
            ld_library_path: vec![b.clone()],
            ..Loader::default()
        };
        let with_rpath = LoaderFrame {
            origin: dir.path().to_path_buf(),
            rpath: vec!["$ORIGIN/a".into()],
            has_runpath: false,
        };
        let r = loader
            .resolve("libx.so", &with_rpath, &[], &[], &mut |_: &Path| true)
            .expect("found");
        assert_eq!(r.path, a.join("libx.so"));
        let with_runpath = LoaderFrame {
            origin: dir.path().to_path_buf(),
            rpath: vec![],
            has_runpath: true,
        };
        let r = loader
            .resolve(
                "libx.so",
                &with_runpath,
                &[],
                &["$ORIGIN/c".into()],
                &mut |_: &Path| true,
            )
            .expect("found");
        assert_eq!(
            r.path,
            b.join("libx.so"),
            "LD_LIBRARY_PATH wins over RUNPATH"
        );
        let r = loader
            .resolve(
                "libx.so",
                &with_runpath,
                &[],
                &["$ORIGIN/c".into()],
                &mut |p: &Path| !p.starts_with(&b),
            )
            .expect("found");
        assert_eq!(r.path, c.join("libx.so"), "a rejected candidate is skipped");
    }

    /// As `LD_DEBUG=libs` shows for a chain top (RPATH `$ORIGIN/sub`) →
    /// mid (RUNPATH) → leaf's loader (nothing): "search path=.../sub
    /// (RPATH from file .../top.so)". The loader with a RUNPATH does not
    /// end the walk up the chain.
    #[test]
    fn elf_rpath_of_a_loader_beyond_one_with_runpath() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("libleaf.so"), b"x").expect("write");
        let loader = Loader {
            target: Some(OsFamily::Linux),
            ..Loader::default()
        };
        let requester = LoaderFrame {
            origin: sub.clone(),
            rpath: vec![],
            has_runpath: false,
        };
        let chain = [
            LoaderFrame {
                origin: sub.clone(),
                rpath: vec!["$ORIGIN/../nowhere".into()],
                has_runpath: true,
            },
            LoaderFrame {
                origin: dir.path().to_path_buf(),
                rpath: vec!["$ORIGIN/sub".into()],
                has_runpath: false,
            },
        ];
        let r = loader
            .resolve("libleaf.so", &requester, &chain, &[], &mut |_: &Path| true)
            .expect("found through the top's RPATH");
        assert_eq!(r.rule, "RPATH $ORIGIN/sub");
        assert_eq!(r.path, dir.path().join("sub").join("libleaf.so"));
    }

    #[test]
    fn macho_rpath_and_loader_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dylibs = dir.path().join("pkg/.dylibs");
        std::fs::create_dir_all(&dylibs).expect("mkdir");
        std::fs::write(dylibs.join("libomp.dylib"), b"x").expect("write");
        let loader = Loader::for_tree(OsFamily::Macos);
        let frame = LoaderFrame {
            origin: dir.path().join("pkg/sub"),
            rpath: vec!["@loader_path/../.dylibs".into()],
            has_runpath: false,
        };
        std::fs::create_dir_all(&frame.origin).expect("mkdir");
        let r = loader
            .resolve("@rpath/libomp.dylib", &frame, &[], &[], &mut |_: &Path| {
                true
            })
            .expect("found");
        assert!(r.path.ends_with(".dylibs/libomp.dylib"));
        let r = loader
            .resolve(
                "@loader_path/../.dylibs/libomp.dylib",
                &frame,
                &[],
                &[],
                &mut |_: &Path| true,
            )
            .expect("found");
        assert!(r.rule.starts_with("@loader_path"));
        assert!(loader
            .resolve(
                "/usr/lib/libSystem.B.dylib",
                &frame,
                &[],
                &[],
                &mut |_: &Path| { true }
            )
            .is_none());
    }

    #[test]
    fn pe_names_are_case_insensitive() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("vcomp140.dll"), b"x").expect("write");
        let loader = Loader::for_tree(OsFamily::Windows);
        let frame = LoaderFrame {
            origin: dir.path().to_path_buf(),
            rpath: vec![],
            has_runpath: false,
        };
        let r = loader
            .resolve("VCOMP140.DLL", &frame, &[], &[], &mut |_: &Path| true)
            .expect("found");
        assert!(r.path.ends_with("vcomp140.dll"));
    }
}
