//! Walking an environment's folders: which files to read (shared
//! libraries and extension modules), in a stable order, each folder once
//! (symlink loops and unreadable folders are reported, not followed), and
//! which package each belongs to.

use super::*;

/// Does this file name look like a shared library or extension module?
pub(crate) fn looks_like_binary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".so")
        || lower.contains(".so.")
        || lower.ends_with(".dylib")
        || lower.ends_with(".pyd")
        || lower.ends_with(".dll")
}

/// Recursive folder walk that survives loops and unreadable folders.
#[derive(Default)]
pub(super) struct Walker {
    /// Folders walked, by identity (device and inode on Unix).
    pub(super) visited: HashSet<DirIdentity>,
    /// Package folders met in a tree walk.
    pub(super) package_dirs: BTreeMap<String, PathBuf>,
    /// Distribution name → version from `*.dist-info` folders.
    pub(super) dists: BTreeMap<String, String>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) vendored_dirs: Vec<PathBuf>,
    /// Folders listed and links followed, for the cache.
    pub(super) witnesses: Witnesses,
}

impl Walker {
    pub(super) fn walk(&mut self, dir: &Path, package: Option<&str>, out: &mut Vec<Entry>) {
        self.walk_at(dir, package, out, 0);
    }

    pub(super) fn walk_at(
        &mut self,
        dir: &Path,
        package: Option<&str>,
        out: &mut Vec<Entry>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.skip(dir, format!("nested deeper than {MAX_DEPTH} folders"));
            return;
        }
        let meta = std::fs::metadata(dir);
        self.witnesses.path_with(dir, meta.as_ref().ok());
        let identity = match meta.and_then(|m| dir_identity(dir, &m)) {
            Ok(id) => id,
            Err(e) => {
                self.skip(dir, io_reason(&e));
                return;
            }
        };
        if !self.visited.insert(identity) {
            return; // already walked through another link: a loop or an alias
        }
        let name = file_name_string(dir);
        if name.ends_with(".libs") || name == ".dylibs" {
            self.vendored_dirs.push(dir.to_path_buf());
        }
        let read = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) => {
                self.skip(dir, io_reason(&e));
                return;
            }
        };
        let mut children: Vec<_> = read.filter_map(Result::ok).collect();
        children.sort_by_key(|e| e.file_name());
        for entry in children {
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            // The folder listing already says what most entries are; only
            // symlinks (and file systems that don't say) need a stat.
            let listed = entry.file_type().ok();
            let is_plain_file = listed.is_some_and(|t| t.is_file());
            if is_plain_file && !looks_like_binary(&file_name) {
                continue;
            }
            let meta = match listed {
                Some(t) if t.is_file() || t.is_dir() => None,
                _ => match self.linked(&path) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // A broken link is worth reporting when it looks like
                        // a library or is a loop; stray broken links are not.
                        if looks_like_binary(&file_name) || e.raw_os_error() == Some(40) {
                            self.skip(&path, io_reason(&e));
                        }
                        continue;
                    }
                },
            };
            let is_dir = meta
                .as_ref()
                .map_or_else(|| listed.is_some_and(|t| t.is_dir()), |m| m.is_dir());
            let is_file = meta.as_ref().map_or(is_plain_file, |m| m.is_file());
            if is_dir {
                if let Some((dist, version)) = dist_info_name(&file_name) {
                    self.dists.insert(dist, version);
                    continue;
                }
                if file_name == "__pycache__" {
                    continue;
                }
                // In a tree, a folder named like a package that matters
                // starts that package.
                let inner = match (package, package_for(&file_name)) {
                    (None, Some(p)) => {
                        if !file_name.ends_with(".libs") {
                            self.package_dirs
                                .entry(p.to_owned())
                                .or_insert_with(|| path.clone());
                        }
                        Some(p)
                    }
                    (outer, _) => outer,
                };
                self.walk_at(&path, inner, out, depth + 1);
            } else if looks_like_binary(&file_name) {
                if is_file {
                    out.push(Entry {
                        path,
                        package: package.map(str::to_owned),
                        source: EntrySource::Walk,
                    });
                } else {
                    self.skip(
                        &path,
                        "not a regular file (a FIFO, socket or device)".to_owned(),
                    );
                }
            }
        }
    }

    /// The metadata of a symlink's target (or of an entry the listing did
    /// not type), witnessed: the target can change without the folder
    /// holding the link changing.
    pub(super) fn linked(&mut self, path: &Path) -> std::io::Result<std::fs::Metadata> {
        let meta = std::fs::metadata(path);
        self.witnesses.path_with(path, meta.as_ref().ok());
        meta
    }

    pub(super) fn skip(&mut self, path: &Path, reason: String) {
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason,
        });
    }
}

/// What makes a folder the same folder, whatever path reaches it.
#[cfg(unix)]
pub(super) type DirIdentity = (u64, u64);
#[cfg(not(unix))]
pub(super) type DirIdentity = PathBuf;

#[cfg(unix)]
pub(super) fn dir_identity(_dir: &Path, meta: &std::fs::Metadata) -> std::io::Result<DirIdentity> {
    use std::os::unix::fs::MetadataExt;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
pub(super) fn dir_identity(dir: &Path, _meta: &std::fs::Metadata) -> std::io::Result<DirIdentity> {
    std::fs::canonicalize(dir)
}

pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(40) => "symlink loop (too many levels of symbolic links)".to_owned(),
        _ => match e.kind() {
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            std::io::ErrorKind::NotFound => "not found (dangling symlink?)".to_owned(),
            _ => e.to_string(),
        },
    }
}

/// The import package a site-packages entry belongs to, for the packages
/// that matter: `numpy`, and `numpy.libs` → `numpy`.
pub(super) fn package_for(name: &str) -> Option<&'static str> {
    PACKAGES_THAT_MATTER.iter().find_map(|(pkg, dists)| {
        let stem = name.strip_suffix(".libs").unwrap_or(name);
        let normal = stem.to_ascii_lowercase().replace('-', "_");
        (name == *pkg || dists.iter().any(|d| d.replace('-', "_") == normal)).then_some(*pkg)
    })
}

/// The package that matters a file belongs to, from its path's folders
/// (`.../site-packages/numpy.libs/x.so` → `numpy`).
pub(super) fn package_from_path(path: &Path) -> Option<&'static str> {
    let mut found = None;
    for component in path.parent()?.components() {
        let name = component.as_os_str().to_string_lossy();
        if let Some(p) = package_for(&name) {
            found = Some(p);
        }
    }
    found
}

/// `scikit_learn-1.9.1.dist-info` → (`scikit_learn`, `1.9.1`), the name
/// normalised (lower case, `-` and `.` as `_`).
pub(super) fn dist_info_name(name: &str) -> Option<(String, String)> {
    let stem = name
        .strip_suffix(".dist-info")
        .or_else(|| name.strip_suffix(".egg-info"))?;
    let (dist, version) = stem.split_once('-')?;
    let version = version.split('-').next().unwrap_or(version);
    Some((
        dist.to_ascii_lowercase().replace(['-', '.'], "_"),
        version.to_owned(),
    ))
}

/// A path's last component as text (empty for `/` or `..`).
pub(super) fn file_name_string(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One entry of a folder listing.
pub(super) struct Child {
    pub(super) path: PathBuf,
    /// A symlink, or an entry the listing does not type: what it is can
    /// change without the folder changing.
    pub(super) linked: bool,
    /// Listed as a folder (not through a symlink).
    pub(super) is_dir: bool,
}

/// The entries of a folder, sorted so that scans are deterministic; the
/// folder is witnessed before it is listed.
pub(super) fn sorted_children(
    dir: &Path,
    witnesses: &mut Witnesses,
) -> std::io::Result<Vec<Child>> {
    witnesses.path(dir);
    let mut children: Vec<Child> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| {
            let listed = e.file_type().ok();
            Child {
                path: e.path(),
                linked: listed.is_none_or(|t| t.is_symlink()),
                is_dir: listed.is_some_and(|t| t.is_dir()),
            }
        })
        .collect();
    children.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(children)
}

/// Every folder of a site-packages folder is walked: any shared library
/// in a distribution can be mapped, by an extension module or by the
/// package itself (`ctypes`). Binaries at the top level count too.
pub(super) fn collect_site_packages(
    root: &Path,
    walker: &mut Walker,
    entries: &mut Vec<Entry>,
    package_dirs: &mut BTreeMap<String, PathBuf>,
    dists: &mut BTreeMap<String, String>,
) {
    let children = match sorted_children(root, &mut walker.witnesses) {
        Ok(c) => c,
        Err(e) => {
            walker.skip(root, io_reason(&e));
            return;
        }
    };
    for Child {
        path,
        linked,
        is_dir,
    } in children
    {
        let name = file_name_string(&path);
        if let Some((dist, version)) = dist_info_name(&name) {
            dists.insert(dist, version);
            continue;
        }
        let is_dir = if linked {
            walker.linked(&path).is_ok_and(|m| m.is_dir())
        } else {
            is_dir
        };
        if !is_dir {
            if looks_like_binary(&name) && walker.linked(&path).is_ok_and(|m| m.is_file()) {
                let stem = name.split('.').next().unwrap_or(&name).to_owned();
                entries.push(Entry {
                    path,
                    package: Some(stem),
                    source: EntrySource::Walk,
                });
            }
            continue;
        }
        if name == "__pycache__" || name.starts_with('.') || name.ends_with(".data") {
            continue;
        }
        let package = site_package_name(&name);
        if !name.ends_with(".libs") {
            package_dirs
                .entry(package.clone())
                .or_insert_with(|| path.clone());
        }
        walker.walk(&path, Some(&package), entries);
    }
}

/// The import package a top-level folder of site-packages belongs to:
/// the package that matters it is part of, else the folder's own name
/// (`xgboost.libs` → `xgboost`: auditwheel names the folder of vendored
/// libraries after the distribution).
pub(super) fn site_package_name(name: &str) -> String {
    if let Some(known) = package_for(name) {
        return known.to_owned();
    }
    name.strip_suffix(".libs").unwrap_or(name).to_owned()
}

pub(super) fn collect_runtime_dir(dir: &Path, walker: &mut Walker, entries: &mut Vec<Entry>) {
    // The folder may well not exist (a venv's lib holds no libraries).
    let Ok(children) = sorted_children(dir, &mut walker.witnesses) else {
        return;
    };
    for Child { path, .. } in children {
        let name = file_name_string(&path);
        if !looks_like_binary(&name) || fingerprint(&name, &BinaryInfo::default()).is_none() {
            continue;
        }
        match walker.linked(&path) {
            Ok(m) if m.is_file() => entries.push(Entry {
                path,
                package: None,
                source: EntrySource::RuntimeFolder,
            }),
            Ok(_) => {}
            Err(e) => walker.skip(&path, io_reason(&e)),
        }
    }
}
