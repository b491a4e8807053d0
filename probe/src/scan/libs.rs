//! Facts about found libraries apart from reading them: system libraries
//! the loader finds itself, symlink chains, compatible candidates, and
//! runtimes present more than once.

use super::*;

pub(super) const FOLDER_SCAN: &str = "(folder scan)";

pub(super) fn is_folder_scan(via: &[String]) -> bool {
    via.first().is_some_and(|s| s.ends_with(FOLDER_SCAN))
}

/// The runtime in a numba `omp` layer's value (`omp (GNU libgomp)`). Part
/// of the facts data, not display text: the rules and the numba
/// acceptance test read it, so it stays as it is whatever
/// [`Vendor`]'s `Display` says.
pub(super) fn numba_omp_runtime(v: Vendor) -> &'static str {
    match v {
        Vendor::GnuOpenmp => "GNU libgomp",
        Vendor::LlvmOpenmp => "LLVM libomp",
        Vendor::IntelOpenmp => "Intel libiomp5",
        Vendor::MsvcOpenmp => "MSVC vcomp",
        _ => "other",
    }
}

/// Same format and at least one architecture in common.
/// Why a file has no result: its reader thread panicked.
pub(super) fn reader_panicked() -> BinaryError {
    BinaryError::ReaderPanic("its message was printed when it happened".to_owned())
}

pub(super) fn compatible(
    candidate: &BinaryInfo,
    format: Option<BinaryFormat>,
    arches: &[String],
) -> bool {
    candidate.format == format
        && (arches.is_empty() || candidate.architectures.iter().any(|a| arches.contains(a)))
}

pub(super) fn parent_display(path: &Path) -> String {
    path.parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `symlink → target` steps from a path to its final file.
pub(super) fn symlink_steps(path: &Path) -> Vec<String> {
    let mut steps = Vec::new();
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        // Resolve symlinks in parent folders first, as the kernel does.
        let Ok(target) = std::fs::read_link(&current) else {
            break;
        };
        let next = if target.is_absolute() {
            target
        } else {
            current.parent().map(|p| p.join(&target)).unwrap_or(target)
        };
        steps.push(format!(
            "symlink {} → {}",
            current.display(),
            next.display()
        ));
        current = next;
    }
    steps
}

/// Libraries that belong to the target OS itself and are never shipped in
/// a Python environment; not worth reporting as unresolved.
pub(super) fn is_system_library(request: &str, target: Option<OsFamily>) -> bool {
    let lower = request.to_ascii_lowercase();
    let base = base_name(&lower);
    match target {
        Some(OsFamily::Macos) => {
            request.starts_with("/usr/lib/") || request.starts_with("/System/")
        }
        Some(OsFamily::Windows) => {
            base.starts_with("api-ms-win-")
                || base.starts_with("ext-ms-")
                || base.starts_with("vcruntime")
                || base.starts_with("msvcp")
                || base.starts_with("python3")
                || base.starts_with("concrt")
                || [
                    "kernel32.dll",
                    "user32.dll",
                    "advapi32.dll",
                    "ntdll.dll",
                    "ws2_32.dll",
                    "shell32.dll",
                    "ole32.dll",
                    "oleaut32.dll",
                    "gdi32.dll",
                    "comdlg32.dll",
                    "bcrypt.dll",
                    "crypt32.dll",
                    "ucrtbase.dll",
                    "msvcrt.dll",
                    "dbghelp.dll",
                    "psapi.dll",
                    "shlwapi.dll",
                    "version.dll",
                    "winmm.dll",
                    "mfplat.dll",
                    "mf.dll",
                    "mfreadwrite.dll",
                    "secur32.dll",
                    "setupapi.dll",
                    "comctl32.dll",
                    "dxgi.dll",
                    "d3d11.dll",
                    "mfuuid.dll",
                    "opengl32.dll",
                    "iphlpapi.dll",
                    "userenv.dll",
                    "rpcrt4.dll",
                    "netapi32.dll",
                    "wsock32.dll",
                    "imm32.dll",
                    "cfgmgr32.dll",
                    "propsys.dll",
                    "powrprof.dll",
                    "normaliz.dll",
                    "wldap32.dll",
                    "dwmapi.dll",
                    "uxtheme.dll",
                ]
                .contains(&base)
        }
        _ => {
            // The manylinux policy's system libraries: never vendored.
            const GLIBC_AND_FRIENDS: &[&str] = &[
                "libc.so",
                "libm.so",
                "libdl.so",
                "librt.so",
                "libpthread.so",
                "libutil.so",
                "libnsl.so",
                "libresolv.so",
                "libcrypt.so",
                "libgcc_s.so",
                "libstdc++.so",
                "ld-linux",
                "ld64.so",
                "linux-vdso",
                "libz.so",
                "libX11.so",
                "libXext.so",
                "libXrender.so",
                "libICE.so",
                "libSM.so",
                "libGL.so",
                "libglib-2.0.so",
                "libgobject-2.0.so",
                "libgthread-2.0.so",
                "libexpat.so",
            ];
            // ELF names are case-sensitive: `libC.so` is no libc.
            let exact = base_name(request);
            GLIBC_AND_FRIENDS.iter().any(|p| exact.starts_with(p))
        }
    }
}

/// Does this library run a thread pool? Builds without threading (a
/// serial OpenBLAS, MKL's sequential layer) have none.
pub(super) fn has_pool(lib: &Library) -> bool {
    !matches!(
        lib.threading_layer.as_ref().map(|t| t.value),
        Some(ThreadingLayer::Disabled | ThreadingLayer::Sequential)
    )
}

/// Runtimes present in more than one copy that has a pool, the copies
/// grouped into alternatives (one pool per group).
pub(super) fn find_duplicates(libraries: &[Library]) -> Vec<DuplicateRuntime> {
    let mut by_vendor: BTreeMap<Vendor, Vec<&Library>> = BTreeMap::new();
    for lib in libraries {
        let runtime = lib
            .apis
            .iter()
            .any(|a| matches!(a, Api::Blas | Api::Openmp | Api::Tbb));
        if !runtime
            || lib.forwards_to.is_some()
            || lib.format.is_none()
            || lib.vendor.value == Vendor::Unknown
            || !has_pool(lib)
        {
            continue;
        }
        // MKL's layer libraries belong to one MKL.
        if lib.vendor.value == Vendor::Mkl && !lib.path.to_string_lossy().contains("mkl_rt") {
            continue;
        }
        by_vendor.entry(lib.vendor.value).or_default().push(lib);
    }
    by_vendor
        .into_iter()
        .filter(|(_, libs)| libs.len() > 1)
        .map(|(vendor, libs)| DuplicateRuntime {
            vendor,
            paths: libs.iter().map(|l| l.path.clone()).collect(),
            groups: alternative_groups(&libs),
        })
        .collect()
}

/// The copies grouped by the names the loader knows them by: copies that
/// share one (directly or through another copy) are one group.
pub(super) fn alternative_groups(libs: &[&Library]) -> Vec<CopyGroup> {
    // Union-find over the copies; a handful at most.
    let mut parent: Vec<usize> = (0..libs.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..libs.len() {
        for j in i + 1..libs.len() {
            if libs[i].is_alternative_to(libs[j]) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[b] = a;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<&Library>> = BTreeMap::new();
    for (i, lib) in libs.iter().enumerate() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(lib);
    }
    groups
        .into_values()
        .map(|members| {
            let name = shared_name(&members);
            CopyGroup {
                name,
                paths: members.iter().map(|l| l.path.clone()).collect(),
            }
        })
        .collect()
}

/// The name the members of a group share (their SONAME first), or the
/// single copy's own SONAME.
fn shared_name(members: &[&Library]) -> Option<String> {
    let first = members.first()?;
    if members.len() == 1 {
        return first.soname.clone();
    }
    let mut names = first.load_names();
    // The SONAME first: it is how the loader knows the copy.
    if let Some(s) = &first.soname {
        names.retain(|n| n != s);
        names.insert(0, s.clone());
    }
    names
        .into_iter()
        .find(|n| members[1..].iter().any(|m| m.load_names().contains(n)))
}
