//! Walking site-packages or a tree: which binaries to read, following
//! their dependencies the way the loader would, and turning what was found
//! into [`Library`] and [`PackageFacts`] entries.
//!
//! Nothing a user's tree holds can stop the scan: unreadable folders,
//! symlink loops, truncated or non-binary files named like libraries and
//! huge sparse files are recorded in [`ScanSummary::skipped`] with a reason.

mod cache;
mod graph;
mod libs;
mod walk;

pub(crate) use cache::scan_cached;

use cache::Witnesses;

use libs::*;
use walk::*;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::binary::{read_binary, BinaryInfo};
use crate::error::BinaryError;
use crate::facts::{
    Api, BinaryFormat, Conclusion, Confidence, CopyGroup, DuplicateRuntime, Evidence,
    EvidenceSource, IntWidth, Library, LoadRoot, OsFamily, PackageFacts, RootKind, ScanSummary,
    Skipped, ThreadingLayer, Unresolved, Vendor,
};
use crate::fingerprint::{base_name, fingerprint, Fingerprint};
use crate::resolve::{Candidates, Loader, LoaderFrame, Resolution};

/// Import packages whose extension modules are always read.
pub const PACKAGES_THAT_MATTER: &[(&str, &[&str])] = &[
    ("numpy", &["numpy"]),
    ("scipy", &["scipy"]),
    ("sklearn", &["scikit-learn", "scikit_learn"]),
    (
        "cv2",
        &[
            "opencv-python",
            "opencv-python-headless",
            "opencv-contrib-python",
            "opencv-contrib-python-headless",
        ],
    ),
    ("numba", &["numba"]),
    ("numexpr", &["numexpr"]),
    ("torch", &["torch"]),
    ("tensorflow", &["tensorflow", "tensorflow-cpu"]),
    ("caiman", &["caiman"]),
    ("llvmlite", &["llvmlite"]),
    ("mkl", &["mkl-service"]),
    ("threadpoolctl", &["threadpoolctl"]),
];

/// Deepest folder nesting followed.
const MAX_DEPTH: usize = 48;
/// Longest `reached_via` chain kept.
const MAX_CHAIN: usize = 24;

/// How the scan finds its starting binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum ScanMode {
    /// site-packages folders: the packages that matter and vendored folders.
    SitePackages,
    /// Every binary under the roots.
    Tree,
    /// The roots are the files a running process has mapped.
    Mapped,
}

/// What to scan.
pub(crate) struct ScanRequest {
    pub roots: Vec<PathBuf>,
    pub mode: ScanMode,
    pub loader: Loader,
    /// Extra folders whose runtime libraries (by name) are read too, e.g.
    /// the environment's `lib` folder (conda, PyPI `mkl`/`intel-openmp`).
    pub runtime_dirs: Vec<PathBuf>,
}

/// What the scan found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScanResult {
    pub libraries: Vec<Library>,
    pub packages: Vec<PackageFacts>,
    pub duplicates: Vec<DuplicateRuntime>,
    pub summary: ScanSummary,
}

/// A starting binary and the package it belongs to.
struct Entry {
    path: PathBuf,
    package: Option<String>,
    source: EntrySource,
}

/// Where an [`Entry`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntrySource {
    /// Walking site-packages or a tree.
    Walk,
    /// The environment's runtime folder (`<prefix>/lib`).
    RuntimeFolder,
    /// Mapped into a running process.
    Mapped,
}

/// One binary in the dependency graph.
struct Node {
    /// Symlink-free path.
    real: PathBuf,
    info: Arc<BinaryInfo>,
    requested_as: BTreeSet<String>,
    needed_by: BTreeSet<PathBuf>,
    deps: BTreeSet<PathBuf>,
    packages: BTreeSet<String>,
    reached_via: Vec<String>,
    /// Imports of binaries that need it (for Accelerate's interface).
    importer_markers: BTreeSet<String>,
    present: bool,
    /// How a process maps it, when it is a load root (nothing scanned
    /// needs it, or an extension module).
    root: Option<RootKind>,
    /// The load roots that reach it: (kind, package) → (first root, count).
    roots: BTreeMap<(RootKind, Option<String>), (PathBuf, usize)>,
    /// Its requests not found (yet).
    unresolved: Vec<String>,
    /// Times its missing requests were searched again.
    retries: u8,
}

struct Scanner {
    loader: Loader,
    parsed: HashMap<PathBuf, Result<Arc<BinaryInfo>, BinaryError>>,
    skipped: BTreeSet<Skipped>,
    unresolved: BTreeSet<Unresolved>,
    nodes: BTreeMap<PathBuf, Node>,
    binaries_read: usize,
    /// Scanning binaries of another system (a `--tree` of wheels).
    foreign: bool,
    /// Reading what a running process mapped.
    mapped: bool,
    /// In that case, the files it mapped: only those are reported.
    mapped_files: HashSet<PathBuf>,
    /// Symlink-free paths already worked out.
    canon: HashMap<PathBuf, Option<PathBuf>>,
    /// What the scan looked at, for the cache.
    witnesses: Witnesses,
}

/// The symlink-free path of `path`, remembered: resolving costs a system
/// call per path component. Symlinks followed are witnessed.
fn canonical(
    cache: &mut HashMap<PathBuf, Option<PathBuf>>,
    witnesses: &mut Witnesses,
    path: &Path,
) -> Option<PathBuf> {
    if let Some(hit) = cache.get(path) {
        return hit.clone();
    }
    let real = crate::canon::canonicalize(path).ok();
    if real.as_deref() != Some(path) {
        witnesses.links(path);
    }
    cache.insert(path.to_path_buf(), real.clone());
    real
}

/// Run a scan.
pub(crate) fn scan(request: ScanRequest) -> ScanResult {
    scan_witnessed(request, Witnesses::default()).0
}

/// Run a scan; `witnesses`, when recording, notes every path it looks at.
pub(crate) fn scan_witnessed(
    mut request: ScanRequest,
    mut witnesses: Witnesses,
) -> (ScanResult, Witnesses) {
    let started = Instant::now();
    if let Some(file) = &request.loader.ld_cache_file {
        witnesses.path(file);
    }
    request.loader.load_ld_cache();
    let mut entries = Vec::new();
    let mut package_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut dists: BTreeMap<String, String> = BTreeMap::new();
    let mut walker = Walker {
        witnesses,
        ..Walker::default()
    };
    for root in &request.roots {
        match request.mode {
            ScanMode::SitePackages => collect_site_packages(
                root,
                &mut walker,
                &mut entries,
                &mut package_dirs,
                &mut dists,
            ),
            ScanMode::Tree => walker.walk(root, None, &mut entries),
            ScanMode::Mapped => entries.push(Entry {
                path: root.clone(),
                package: package_from_path(root).map(str::to_owned),
                source: EntrySource::Mapped,
            }),
        }
    }
    for dir in &request.runtime_dirs {
        collect_runtime_dir(dir, &mut walker, &mut entries);
    }
    let mut scanner = Scanner {
        loader: request.loader,
        parsed: HashMap::new(),
        skipped: BTreeSet::new(),
        unresolved: BTreeSet::new(),
        nodes: BTreeMap::new(),
        binaries_read: 0,
        foreign: request.mode == ScanMode::Tree,
        mapped: request.mode == ScanMode::Mapped,
        mapped_files: HashSet::new(),
        canon: HashMap::new(),
        witnesses: std::mem::take(&mut walker.witnesses),
    };
    scanner.skipped.extend(std::mem::take(&mut walker.skipped));
    for (name, path) in std::mem::take(&mut walker.package_dirs) {
        package_dirs.entry(name).or_insert(path);
    }
    dists.extend(std::mem::take(&mut walker.dists));
    if request.mode == ScanMode::Tree || scanner.loader.target == Some(OsFamily::Windows) {
        // Windows: delvewheel's `<dist>.libs` and `<pkg>/.libs` are added to
        // the DLL search path by the packages' `__init__.py`.
        for dir in &walker.vendored_dirs {
            if !scanner.loader.dll_dirs.contains(dir) {
                scanner.loader.dll_dirs.push(dir.clone());
            }
        }
    }

    scanner.parse_all(&entries);
    for (entry, kind) in scanner.root_order(&entries) {
        scanner.visit_entry(entry, kind);
    }
    scanner.reuse_loaded_sonames();
    scanner.propagate_packages();

    let libraries = scanner.libraries();
    let duplicates = find_duplicates(&libraries);
    let packages = scanner.packages(&package_dirs, &dists, &libraries);
    let summary = ScanSummary {
        roots: request.roots,
        binaries_read: scanner.binaries_read,
        skipped: scanner.skipped.into_iter().collect(),
        unresolved: scanner.unresolved.into_iter().collect(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        from_cache: false,
    };
    let result = ScanResult {
        libraries,
        packages,
        duplicates,
        summary,
    };
    (result, scanner.witnesses)
}

/// The scan's side of the loader's search: which candidates it looked
/// for (witnessed) and whether an existing file is of the requester's
/// format and architecture (read once, remembered).
struct Acceptor<'a> {
    parsed: &'a mut HashMap<PathBuf, Result<Arc<BinaryInfo>, BinaryError>>,
    binaries_read: &'a mut usize,
    skipped: &'a mut BTreeSet<Skipped>,
    canon: &'a mut HashMap<PathBuf, Option<PathBuf>>,
    witnesses: &'a mut Witnesses,
    format: Option<BinaryFormat>,
    arches: &'a [String],
}

impl Candidates for Acceptor<'_> {
    fn looking_for(&mut self, path: &Path) {
        self.witnesses.folder_of(path);
    }

    fn accept(&mut self, candidate: &Path) -> bool {
        let Some(c) = canonical(self.canon, self.witnesses, candidate) else {
            return false;
        };
        if let Some(known) = self.parsed.get(&c) {
            return known
                .as_ref()
                .is_ok_and(|ci| compatible(ci, self.format, self.arches));
        }
        self.witnesses.path(&c);
        let r = read_binary(&c).map(Arc::new);
        let ok = matches!(&r, Ok(ci) if compatible(ci, self.format, self.arches));
        match &r {
            Ok(_) => *self.binaries_read += 1,
            // A candidate that is not a binary is no news; a parser that
            // panicked on it is.
            Err(e @ BinaryError::ParserPanic { .. }) => {
                self.skipped.insert(Skipped {
                    path: c.clone(),
                    reason: e.to_string(),
                });
            }
            Err(_) => {}
        }
        self.parsed.insert(c, r);
        ok
    }
}

impl Scanner {
    /// Parse all starting binaries, on all cores.
    fn parse_all(&mut self, entries: &[Entry]) {
        let paths: Vec<PathBuf> = entries
            .iter()
            .filter_map(|e| canonical(&mut self.canon, &mut self.witnesses, &e.path))
            .filter(|p| !self.parsed.contains_key(p))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Stamped before they are read: a change while reading shows.
        for path in &paths {
            self.witnesses.path(path);
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = paths.len().div_ceil(threads).max(1);
        let results: Vec<(PathBuf, Result<Arc<BinaryInfo>, BinaryError>)> =
            std::thread::scope(|s| {
                let handles: Vec<_> = paths
                    .chunks(chunk)
                    .map(|part| {
                        s.spawn(move || {
                            part.iter()
                                .map(|p| (p.clone(), read_binary(p).map(Arc::new)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                // A reader thread only panics outside the contained parse
                // (a bug, reported by the panic hook as usual): its files
                // are then recorded as skipped, never dropped silently.
                handles
                    .into_iter()
                    .zip(paths.chunks(chunk))
                    .flat_map(|(h, part)| {
                        h.join().unwrap_or_else(|_| {
                            part.iter()
                                .map(|p| (p.clone(), Err(reader_panicked())))
                                .collect()
                        })
                    })
                    .collect()
            });
        for (path, result) in results {
            self.record_parse(&path, &result);
            self.parsed.insert(path, result);
        }
    }

    fn record_parse(&mut self, path: &Path, result: &Result<Arc<BinaryInfo>, BinaryError>) {
        match result {
            Ok(_) => self.binaries_read += 1,
            Err(e) => {
                self.skipped.insert(Skipped {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        }
    }

    fn parse(&mut self, real: &Path) -> Result<Arc<BinaryInfo>, BinaryError> {
        if let Some(r) = self.parsed.get(real) {
            return r.clone();
        }
        self.witnesses.path(real);
        let result = read_binary(real).map(Arc::new);
        self.record_parse(real, &result);
        self.parsed.insert(real.to_path_buf(), result.clone());
        result
    }

    /// Wheels cannot hold symlinks, so `libtbb.so`, `libtbb.so.12` and
    /// `libtbb.so.12.20` arrive as three identical files in one folder. The
    /// loader maps one of them: keep the one it reaches (or the one named
    /// like its SONAME) and mention the others.
    fn same_file_copies(&self) -> (HashSet<PathBuf>, HashMap<PathBuf, Vec<String>>) {
        let mut groups: BTreeMap<(PathBuf, String, u64), Vec<&Node>> = BTreeMap::new();
        for node in self.nodes.values().filter(|n| n.present) {
            let (Some(dir), Some(soname)) = (node.real.parent(), node.info.soname.as_ref()) else {
                continue;
            };
            let size = std::fs::metadata(&node.real).map(|m| m.len()).unwrap_or(0);
            groups
                .entry((dir.to_path_buf(), soname.clone(), size))
                .or_default()
                .push(node);
        }
        let mut dropped = HashSet::new();
        let mut aliases: HashMap<PathBuf, Vec<String>> = HashMap::new();
        for ((_, soname, _), nodes) in groups {
            if nodes.len() < 2 {
                continue;
            }
            let keep = nodes
                .iter()
                .find(|n| !n.needed_by.is_empty())
                .or_else(|| {
                    nodes.iter().find(|n| {
                        n.real
                            .file_name()
                            .is_some_and(|f| f.to_string_lossy() == soname)
                    })
                })
                .unwrap_or(&nodes[0]);
            for n in &nodes {
                if n.real != keep.real && n.needed_by.is_empty() {
                    dropped.insert(n.real.clone());
                    aliases.entry(keep.real.clone()).or_default().push(
                        n.real
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                }
            }
        }
        (dropped, aliases)
    }

    fn libraries(&self) -> Vec<Library> {
        let mut out = Vec::new();
        let (dropped, aliases) = self.same_file_copies();
        for node in self.nodes.values() {
            if dropped.contains(&node.real) {
                continue;
            }
            // A running process: what it mapped, nothing the loader
            // emulation merely could reach.
            if self.mapped && !self.mapped_files.contains(&node.real) {
                continue;
            }
            let name = if node.present {
                file_name_string(&node.real)
            } else {
                node.real.to_string_lossy().into_owned()
            };
            let Some(fp) = fingerprint(&name, &node.info).or_else(|| {
                // Hash-renamed or oddly named copies: try the names it was
                // asked for.
                node.requested_as
                    .iter()
                    .find_map(|r| fingerprint(r, &node.info))
            }) else {
                continue;
            };
            let mut lib = self.library_from(node, fp);
            if let Some(names) = aliases.get(&node.real) {
                lib.reached_via.push(format!(
                    "identical copies in the same folder, not listed separately: {}",
                    names.join(", ")
                ));
            }
            out.push(lib);
        }
        out
    }

    fn library_from(&self, node: &Node, fp: Fingerprint) -> Library {
        let Fingerprint {
            apis,
            mut vendor,
            version,
            threading_layer,
            openmp_runtime,
            mut int_width,
            symbol_prefix,
            symbol_suffix,
            parallel_framework,
            forwards_to,
        } = fp;
        let info = &node.info;
        if let Some(soname) = &info.soname {
            if info.format == Some(BinaryFormat::Pe) && vendor.value != Vendor::Unknown {
                vendor.evidence.push(Evidence::new(
                    EvidenceSource::Static,
                    format!("export-directory name {soname}"),
                ));
            }
        }
        if vendor.value == Vendor::Accelerate && !node.importer_markers.is_empty() {
            let sample: Vec<&str> = node
                .importer_markers
                .iter()
                .take(2)
                .map(String::as_str)
                .collect();
            let ilp64 = node.importer_markers.iter().any(|m| m.contains("ILP64"));
            vendor.evidence.push(Evidence::new(
                EvidenceSource::Static,
                format!(
                    "importers use the new LAPACK interface of macOS 13.3+: {}",
                    sample.join(", ")
                ),
            ));
            int_width = Some(Conclusion::new(
                if ilp64 {
                    IntWidth::Ilp64
                } else {
                    IntWidth::Lp64
                },
                Confidence::High,
                vec![Evidence::new(
                    EvidenceSource::Static,
                    format!("imports {}", sample.join(", ")),
                )],
            ));
        }
        let forwards_to = forwards_to.and_then(|name| {
            node.deps
                .iter()
                .find(|d| {
                    self.nodes
                        .get(*d)
                        .is_some_and(|n| n.requested_as.contains(&name))
                })
                .cloned()
        });
        if let Some(target) = forwards_to.as_ref().and_then(|t| self.nodes.get(t)) {
            let name = file_name_string(&target.real);
            if let Some(impl_fp) = fingerprint(&name, &target.info) {
                if impl_fp.vendor.value != Vendor::Unknown {
                    vendor.value = impl_fp.vendor.value;
                    vendor.evidence.push(Evidence::new(
                        EvidenceSource::Static,
                        format!(
                            "an interface library: the implementation is {}",
                            target.real.display()
                        ),
                    ));
                }
            }
        }
        Library {
            path: node.real.clone(),
            requested_as: node.requested_as.iter().cloned().collect(),
            soname: info.soname.clone(),
            format: node.present.then_some(info.format).flatten(),
            architectures: info.architectures.clone(),
            apis,
            vendor,
            version,
            threading_layer,
            openmp_runtime,
            int_width,
            symbol_prefix,
            symbol_suffix,
            parallel_framework,
            forwards_to,
            pulled_in_by: node.packages.iter().cloned().collect(),
            needed_by: node.needed_by.iter().cloned().collect(),
            dependencies: node.deps.iter().cloned().collect(),
            reached_via: node.reached_via.clone(),
            runtime: None,
            load_roots: node.load_roots(),
        }
    }

    fn packages(
        &self,
        package_dirs: &BTreeMap<String, PathBuf>,
        dists: &BTreeMap<String, String>,
        libraries: &[Library],
    ) -> Vec<PackageFacts> {
        let mut out = Vec::new();
        for (name, path) in package_dirs {
            let libs: Vec<PathBuf> = libraries
                .iter()
                .filter(|l| l.pulled_in_by.contains(name))
                .map(|l| l.path.clone())
                .collect();
            // Every folder is walked; a package that matters is listed
            // always, any other when it reaches a runtime library.
            let matters = PACKAGES_THAT_MATTER.iter().any(|(p, _)| p == name);
            if !matters && libs.is_empty() {
                continue;
            }
            // Nodes have symlink-free paths.
            let shown = path;
            let real_path = crate::canon::canonicalize(path).unwrap_or_else(|_| path.clone());
            let path = &real_path;
            let dist_names: Vec<String> = PACKAGES_THAT_MATTER
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, d)| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_else(|| vec![name.clone()]);
            let (distribution, version) = dist_names
                .iter()
                .find_map(|d| {
                    let key = d.to_ascii_lowercase().replace(['-', '.'], "_");
                    dists.get(&key).map(|v| (Some(d.clone()), Some(v.clone())))
                })
                .unwrap_or((None, None));
            let binaries = self
                .nodes
                .values()
                .filter(|n| n.present && n.packages.contains(name) && n.real.starts_with(path))
                .count();
            let threading_layers = if name == "numba" {
                self.numba_layers(path)
            } else {
                Vec::new()
            };
            out.push(PackageFacts {
                name: name.clone(),
                distribution,
                version,
                path: shown.clone(),
                binaries,
                libraries: libs,
                threading_layers,
            });
        }
        out
    }

    /// numba's threading layers: a pool module is usable when the runtime
    /// it needs resolves.
    fn numba_layers(&self, numba_dir: &Path) -> Vec<Conclusion<String>> {
        let ufunc = numba_dir.join("np").join("ufunc");
        let mut layers = Vec::new();
        for (prefix, layer) in [
            ("omppool", "omp"),
            ("tbbpool", "tbb"),
            ("workqueue", "workqueue"),
        ] {
            let module = self.nodes.values().find(|n| {
                n.present
                    && n.real.starts_with(&ufunc)
                    && n.real
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(prefix))
            });
            let Some(module) = module else { continue };
            let mut evidence = vec![Evidence::new(
                EvidenceSource::Static,
                format!("module {}", module.real.display()),
            )];
            let missing: Vec<&String> = self
                .unresolved
                .iter()
                .filter(|u| u.needed_by == module.real)
                .map(|u| &u.name)
                .collect();
            if !missing.is_empty() {
                continue;
            }
            let mut value = layer.to_owned();
            for dep in &module.deps {
                if let Some(n) = self.nodes.get(dep) {
                    let name = n
                        .real
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if let Some(fp) = fingerprint(&name, &n.info) {
                        if fp.vendor.value.is_openmp() || fp.vendor.value == Vendor::Tbb {
                            evidence.push(Evidence::new(
                                EvidenceSource::Static,
                                format!("NEEDED {name} ({})", fp.vendor.value),
                            ));
                            if fp.vendor.value.is_openmp() {
                                value = format!("omp ({})", numba_omp_runtime(fp.vendor.value));
                            }
                        }
                    }
                }
            }
            layers.push(Conclusion::new(value, Confidence::High, evidence));
        }
        layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names() {
        for yes in [
            "a.so",
            "libgomp.so.1",
            "x.cpython-311-x86_64-linux-gnu.so",
            "libomp.dylib",
            "m.pyd",
            "VCOMP140.DLL",
        ] {
            assert!(looks_like_binary(yes), "{yes}");
        }
        for no in ["a.py", "README", "so.txt", "x.pyc"] {
            assert!(!looks_like_binary(no), "{no}");
        }
    }

    #[test]
    fn package_names() {
        assert_eq!(package_for("numpy.libs"), Some("numpy"));
        assert_eq!(package_for("scikit_learn.libs"), Some("sklearn"));
        assert_eq!(package_for("opencv_python_headless.libs"), Some("cv2"));
        assert_eq!(package_for("sklearn"), Some("sklearn"));
        assert_eq!(package_for("requests"), None);
    }
}
