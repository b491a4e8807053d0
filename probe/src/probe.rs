//! The probe's entry points: put host, Python and library facts together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::env::{current_env, relevant_env};
use crate::error::ProbeError;
use crate::facts::{
    Conclusion, Confidence, Evidence, EvidenceSource, Facts, Library, OsFamily, Subject, Vendor,
    SCHEMA_VERSION,
};
use crate::host::collect_host;
use crate::python::{discover_python, query_python};
use crate::resolve::Loader;
use crate::scan::{scan, scan_cached, ScanMode, ScanRequest};

/// What to probe and how.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// `--python PATH`: an interpreter, or a venv/conda folder.
    pub python: Option<PathBuf>,
    /// For trees: the OS the binaries are for (inferred when `None`).
    pub target_os: Option<OsFamily>,
    /// The environment the probed process would run with; the current
    /// process's environment when `None`.
    pub env: Option<BTreeMap<String, String>>,
}

pub(crate) fn producer() -> String {
    format!("caiclust {}", env!("CARGO_PKG_VERSION"))
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Probe a Python environment: find the interpreter (`--python`, else the
/// active `VIRTUAL_ENV` / `CONDA_PREFIX`, else `python3` on `PATH`), query
/// it once, and read the binaries of its site-packages without importing
/// anything.
///
/// Both the interpreter's answer and the site-packages scan are cached in
/// [`crate::cache_dir`] (`scan-*.json`): a scan is reused while the request
/// is the same and nothing it looked at (folders listed or searched,
/// binaries read, `/etc/ld.so.cache`) has a new size, mtime or inode;
/// [`crate::ScanSummary::from_cache`] says so. `CAICLUST_NO_CACHE` set to
/// a non-empty value turns both caches off.
pub fn probe_python(options: &ProbeOptions) -> Result<Facts, ProbeError> {
    let full_env = options.env.clone().unwrap_or_else(current_env);
    let collected_at_unix = now_unix();
    let (exe, source) = discover_python(options.python.as_deref(), &full_env)?;
    // The host facts and the interpreter query are independent: overlap
    // them.
    let (host, python) = std::thread::scope(|s| {
        let host = s.spawn(|| collect_host(&full_env));
        let python = query_python(&exe, source);
        (host.join(), python)
    });
    let mut python = python?;
    python.requires = crate::python::read_requires(&python.site_packages);
    let host = host.map_err(|_| ProbeError::Unreadable {
        path: PathBuf::from("/proc"),
        reason: "host probe panicked".into(),
    })?;
    let exe_dir = python.sys_executable.parent().map(Path::to_path_buf);
    let loader = Loader::for_host(&full_env, exe_dir);
    let mut runtime_dirs = vec![python.prefix.join("lib")];
    if cfg!(windows) {
        runtime_dirs.push(python.prefix.join("Library").join("bin"));
    }
    let result = scan_cached(ScanRequest {
        roots: python.site_packages.clone(),
        mode: ScanMode::SitePackages,
        loader,
        runtime_dirs,
    });
    let mut libraries = result.libraries;
    versions_from_packages(&mut libraries, Path::new(crate::dpkg::DPKG_DB));
    Ok(Facts {
        schema_version: SCHEMA_VERSION,
        producer: producer(),
        collected_at_unix,
        subject: Subject::Python { executable: exe },
        target_os: OsFamily::current(),
        host,
        python: Some(python),
        packages: result.packages,
        libraries,
        duplicates: result.duplicates,
        env: relevant_env(full_env),
        scan: result.summary,
        process: None,
    })
}

/// A runtime of the system (under `/usr` or `/lib`) whose binary gives no
/// version gets the one of the Debian package that installed it (BLIS).
pub(crate) fn versions_from_packages(libraries: &mut [Library], db: &Path) {
    for lib in libraries.iter_mut() {
        let system = lib.path.starts_with("/usr") || lib.path.starts_with("/lib");
        if lib.version.is_some() || !system || lib.vendor.value == Vendor::Unknown {
            continue;
        }
        if let Some(owner) = crate::dpkg::owner_of(db, &lib.path) {
            lib.version = Some(Conclusion::new(
                owner.upstream_version().to_string(),
                Confidence::Medium,
                vec![Evidence::new(
                    EvidenceSource::System,
                    format!(
                        "the Debian package {} {} installed {}",
                        owner.package,
                        owner.version,
                        lib.path.display()
                    ),
                )],
            ));
        }
    }
}

/// Probe a folder of unpacked wheels or libraries, from any OS. The target
/// OS is `options.target_os`, else the format most binaries in the tree
/// have. Only paths inside the tree resolve; system libraries of the target
/// that matter (Accelerate, `vcomp140.dll`) are reported as not present.
pub fn probe_tree(root: &Path, options: &ProbeOptions) -> Result<Facts, ProbeError> {
    let collected_at_unix = now_unix();
    let meta = std::fs::metadata(root).map_err(|e| ProbeError::Unreadable {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(ProbeError::Unreadable {
            path: root.to_path_buf(),
            reason: "not a folder".into(),
        });
    }
    let root = &crate::canon::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let full_env = options.env.clone().unwrap_or_else(current_env);
    let target = match options.target_os {
        Some(t) => t,
        None => infer_tree_os(root),
    };
    let result = scan(ScanRequest {
        roots: vec![root.to_path_buf()],
        mode: ScanMode::Tree,
        loader: Loader::for_tree(target),
        runtime_dirs: Vec::new(),
    });
    Ok(Facts {
        schema_version: SCHEMA_VERSION,
        producer: producer(),
        collected_at_unix,
        subject: Subject::Tree {
            root: root.to_path_buf(),
        },
        target_os: target,
        host: collect_host(&full_env),
        python: None,
        packages: result.packages,
        libraries: result.libraries,
        duplicates: result.duplicates,
        env: relevant_env(full_env),
        scan: result.summary,
        process: None,
    })
}

/// The OS whose binary format dominates a tree, from file names first
/// (cheap), falling back to the host's.
fn infer_tree_os(root: &Path) -> OsFamily {
    let mut counts: BTreeMap<OsFamily, usize> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = std::collections::HashSet::new();
    while let Some((dir, depth)) = stack.pop() {
        if depth > 32
            || !seen.insert(crate::canon::canonicalize(&dir).unwrap_or_else(|_| dir.clone()))
        {
            continue;
        }
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
            if path.is_dir() {
                stack.push((path, depth + 1));
            } else if name.ends_with(".pyd") || name.ends_with(".dll") {
                *counts.entry(OsFamily::Windows).or_default() += 1;
            } else if name.ends_with(".dylib") || name.contains("-darwin.so") {
                *counts.entry(OsFamily::Macos).or_default() += 1;
            } else if name.ends_with(".so") || name.contains(".so.") {
                // Could be Linux or macOS (`.cpython-311-darwin.so`): sniff.
                // Never open anything but a regular file: a FIFO named
                // like a library would block the open forever.
                if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    continue;
                }
                let os = std::fs::File::open(&path)
                    .ok()
                    .and_then(|mut f| {
                        use std::io::Read;
                        let mut b = [0u8; 4];
                        f.read_exact(&mut b).ok().map(|_| b)
                    })
                    .and_then(|b| crate::binary::sniff_format(&b))
                    .map(|f| f.os());
                if let Some(os) = os {
                    *counts.entry(os).or_default() += 1;
                }
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|(os, n)| (*n, *os == OsFamily::current()))
        .map(|(os, _)| os)
        .unwrap_or_else(OsFamily::current)
}
