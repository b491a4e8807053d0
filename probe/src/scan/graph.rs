//! The dependency graph as the loader builds it: which binaries a Python
//! process maps itself (its *load roots*: extension modules it imports,
//! libraries a package opens with `ctypes`), and what `ld.so` maps for
//! each of them. Beyond the folder search of [`crate::resolve`], this
//! follows what glibc's loader does with objects already mapped: a
//! `NEEDED` name that matches the SONAME (or the requested name) of an
//! object mapped earlier in the same load is that object, found without
//! any search; a library met first on its own and later through a loader
//! whose inherited `DT_RPATH` finds what it could not is searched again
//! with that loader's chain.

use super::*;

/// Most times one binary's missing dependencies are searched again through
/// another chain of loaders.
const MAX_RETRIES: u8 = 4;

/// One binary waiting in the breadth-first walk of a load.
pub(super) struct Pending {
    /// The path the loader opened (its folder is `$ORIGIN`).
    found_at: PathBuf,
    real: PathBuf,
    /// Its loaders, nearest first.
    chain: Vec<LoaderFrame>,
    /// Only these requests (a retry through a better chain); all when `None`.
    only: Option<Vec<String>>,
}

/// What a request resolved to.
struct Found {
    resolution: Resolution,
    real: PathBuf,
    info: Arc<BinaryInfo>,
}

/// The binary at the front of a queue.
fn real_of(queue: &VecDeque<Pending>) -> PathBuf {
    queue.front().map(|p| p.real.clone()).unwrap_or_default()
}

/// Is this binary a Python extension module (mapped by `import`), rather
/// than a shared library?
pub(super) fn is_extension_module(path: &Path, info: &BinaryInfo) -> bool {
    let name = file_name_string(path);
    name.contains(".cpython-")
        || name.contains(".abi3.")
        || name.contains(".pypy")
        || name.to_ascii_lowercase().ends_with(".pyd")
        || info.exports.iter().any(|e| e.starts_with("PyInit_"))
}

impl Scanner {
    /// The order in which entries become load roots, with their kind:
    /// extension modules first (what `import` maps), then libraries that
    /// no scanned binary needs (what packages map with `ctypes`), then the
    /// rest, then the environment's runtime folder. A library needed by
    /// another is so reached through its loader's chain, as `ld.so` would.
    /// In a live process every mapped file is a root, in the same order.
    pub(super) fn root_order<'a>(&self, entries: &'a [Entry]) -> Vec<(&'a Entry, RootKind)> {
        let info_of = |e: &Entry| {
            self.canon
                .get(&e.path)
                .cloned()
                .flatten()
                .and_then(|real| self.parsed.get(&real).and_then(|r| r.as_ref().ok()))
                .cloned()
        };
        let mut needed: HashSet<String> = HashSet::new();
        for e in entries {
            if let Some(info) = info_of(e) {
                needed.extend(info.needed.iter().map(|n| base_name(n).to_owned()));
            }
        }
        let mut tiers: [Vec<(&Entry, RootKind)>; 4] = Default::default();
        for e in entries {
            let info = info_of(e).unwrap_or_default();
            let name = file_name_string(&e.path);
            let is_needed =
                needed.contains(&name) || info.soname.as_ref().is_some_and(|s| needed.contains(s));
            let (tier, kind) = match e.source {
                EntrySource::RuntimeFolder => (3, RootKind::RuntimeFolder),
                // All of them are roots of a live process; extension
                // modules first all the same, for their loaders' chains.
                EntrySource::Mapped if is_extension_module(&e.path, &info) => (0, RootKind::Mapped),
                EntrySource::Mapped => (1 + usize::from(is_needed), RootKind::Mapped),
                _ if is_extension_module(&e.path, &info) => (0, RootKind::ExtensionModule),
                _ if !is_needed => (1, RootKind::PackageLibrary),
                _ => (2, RootKind::PackageLibrary),
            };
            tiers[tier].push((e, kind));
        }
        tiers.into_iter().flatten().collect()
    }

    pub(super) fn visit_entry(&mut self, entry: &Entry, kind: RootKind) {
        let Some(real) = canonical(&mut self.canon, &mut self.witnesses, &entry.path) else {
            return;
        };
        let Ok(info) = self.parse(&real) else { return };
        let mapped = self.mapped;
        if mapped {
            self.mapped_files.insert(real.clone());
        }
        let is_new = !self.nodes.contains_key(&real);
        let node = self.nodes.entry(real.clone()).or_insert_with(|| {
            let mut node = Node::new(real.clone(), info.clone());
            node.reached_via = vec![if mapped {
                "mapped into the process (/proc/PID/maps)".to_owned()
            } else {
                format!("found in {} {FOLDER_SCAN}", parent_display(&entry.path))
            }];
            node.root = Some(kind);
            node
        });
        if let Some(name) = entry.path.file_name() {
            node.requested_as
                .insert(name.to_string_lossy().into_owned());
        }
        if let Some(p) = &entry.package {
            node.packages.insert(p.clone());
        }
        if is_new {
            self.expand(entry.path.clone(), real, Vec::new());
        }
    }

    /// Breadth-first walk of the dependency graph from one load root.
    fn expand(&mut self, found_at: PathBuf, real: PathBuf, chain: Vec<LoaderFrame>) {
        let mut queue = VecDeque::from([Pending {
            found_at,
            real,
            chain,
            only: None,
        }]);
        // Names of the objects mapped in this load, as ld.so matches them:
        // their SONAMEs and the names they were asked for.
        let mut loaded: HashMap<String, PathBuf> = HashMap::new();
        if let Some(soname) = self
            .nodes
            .get(&real_of(&queue))
            .and_then(|n| n.info.soname.clone())
        {
            loaded.insert(soname, real_of(&queue));
        }
        while let Some(p) = queue.pop_front() {
            let Some(node) = self.nodes.get(&p.real) else {
                continue;
            };
            let info = node.info.clone();
            let frame = LoaderFrame {
                origin: p
                    .found_at
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                rpath: info.rpath.clone(),
                has_runpath: !info.runpath.is_empty(),
            };
            let requests = p.only.clone().unwrap_or_else(|| info.needed.clone());
            for request in &requests {
                let Some(found) = self.find_dependency(request, &p, &frame, &info, &loaded) else {
                    self.unresolved_dependency(request, &p.real, &info);
                    continue;
                };
                if p.only.is_some() {
                    self.resolved_late(&p.real, request);
                }
                for name in std::iter::once(request).chain(found.info.soname.as_ref()) {
                    loaded
                        .entry(name.clone())
                        .or_insert_with(|| found.real.clone());
                }
                if let Some(next) = self.link(&p, &frame, request, found) {
                    queue.push_back(next);
                }
            }
        }
    }

    /// Where the loader finds `request` of the binary `p`: an object of
    /// this load already known by that name, else the folder search.
    fn find_dependency(
        &mut self,
        request: &str,
        p: &Pending,
        frame: &LoaderFrame,
        info: &BinaryInfo,
        loaded: &HashMap<String, PathBuf>,
    ) -> Option<Found> {
        if let Some(path) = loaded.get(request).filter(|path| **path != p.real) {
            let dep = self.nodes.get(path)?;
            if compatible(&dep.info, info.format, &info.architectures) {
                return Some(Found {
                    resolution: Resolution {
                        path: path.clone(),
                        rule: format!("already mapped in this load under the name {request}"),
                    },
                    real: path.clone(),
                    info: dep.info.clone(),
                });
            }
        }
        let mut candidates = Acceptor {
            parsed: &mut self.parsed,
            binaries_read: &mut self.binaries_read,
            skipped: &mut self.skipped,
            canon: &mut self.canon,
            witnesses: &mut self.witnesses,
            format: info.format,
            arches: &info.architectures,
        };
        let resolution =
            self.loader
                .resolve(request, frame, &p.chain, &info.runpath, &mut candidates)?;
        let real = canonical(&mut self.canon, &mut self.witnesses, &resolution.path)?;
        let info = self.parse(&real).ok()?;
        Some(Found {
            resolution,
            real,
            info,
        })
    }

    /// Record that `p` loads `found` for `request`; the binary to walk
    /// next, if any: a new one, or one met again through a chain of
    /// loaders whose `DT_RPATH` may find what it could not find alone.
    fn link(
        &mut self,
        p: &Pending,
        frame: &LoaderFrame,
        request: &str,
        found: Found,
    ) -> Option<Pending> {
        let Found {
            resolution,
            real: dep_real,
            info: dep_info,
        } = found;
        let parent_via = self.nodes.get_mut(&p.real).map(|node| {
            node.deps.insert(dep_real.clone());
            node.reached_via.clone()
        })?;
        let is_new = !self.nodes.contains_key(&dep_real);
        let mut via: Vec<String> = if is_folder_scan(&parent_via) {
            Vec::new()
        } else {
            parent_via
        };
        via.push(format!("{} needs {request}", p.real.display()));
        via.push(format!(
            "{} → {}",
            resolution.rule,
            resolution.path.display()
        ));
        via.extend(symlink_steps(&resolution.path));
        via.truncate(MAX_CHAIN);
        let dep = self
            .nodes
            .entry(dep_real.clone())
            .or_insert_with(|| Node::new(dep_real.clone(), dep_info));
        // A path through the loader explains more than a folder scan.
        if dep.reached_via.is_empty() || is_folder_scan(&dep.reached_via) {
            dep.reached_via = via;
        }
        // Reached from another binary: not a load root of its own (an
        // extension module stays one: `import` maps it).
        if dep.root != Some(RootKind::ExtensionModule) {
            dep.root = None;
        }
        dep.requested_as.insert(request.to_owned());
        dep.needed_by.insert(p.real.clone());
        let mut chain = vec![frame.clone()];
        chain.extend(p.chain.iter().cloned());
        chain.truncate(MAX_CHAIN);
        let retry = !is_new
            && !dep.unresolved.is_empty()
            && dep.retries < MAX_RETRIES
            && chain.iter().any(|f| !f.rpath.is_empty());
        if !is_new && !retry {
            return None;
        }
        let only = retry.then(|| {
            dep.retries += 1;
            dep.unresolved.clone()
        });
        Some(Pending {
            found_at: resolution.path,
            real: dep_real,
            chain,
            only,
        })
    }

    /// `request` of `requester`, missing when it was first searched, is
    /// found now.
    fn resolved_late(&mut self, requester: &Path, request: &str) {
        self.unresolved.remove(&Unresolved {
            name: request.to_owned(),
            needed_by: requester.to_path_buf(),
        });
        if let Some(node) = self.nodes.get_mut(requester) {
            node.unresolved.retain(|n| n != request);
        }
    }

    /// Dependencies still missing once every root was walked, that another
    /// load maps under that SONAME: ld.so reuses that object when it was
    /// mapped first, without any search.
    pub(super) fn reuse_loaded_sonames(&mut self) {
        let missing: Vec<Unresolved> = self.unresolved.iter().cloned().collect();
        if missing.is_empty() {
            return;
        }
        let mapped = self.mapped_by_loads();
        for u in missing {
            let Some(requester) = self.nodes.get(&u.needed_by) else {
                continue;
            };
            let info = requester.info.clone();
            let holder = self.nodes.values().find(|n| {
                n.present
                    && mapped.contains(&n.real)
                    && n.real != u.needed_by
                    && n.info.soname.as_deref() == Some(u.name.as_str())
                    && compatible(&n.info, info.format, &info.architectures)
            });
            let Some(holder) = holder else { continue };
            let found = Found {
                resolution: Resolution {
                    path: holder.real.clone(),
                    rule: format!(
                        "already mapped under its SONAME {} when another load mapped it first",
                        u.name
                    ),
                },
                real: holder.real.clone(),
                info: holder.info.clone(),
            };
            let p = Pending {
                found_at: u.needed_by.clone(),
                real: u.needed_by.clone(),
                chain: Vec::new(),
                only: None,
            };
            let frame = LoaderFrame {
                origin: PathBuf::new(),
                rpath: Vec::new(),
                has_runpath: false,
            };
            self.resolved_late(&u.needed_by, &u.name);
            let _ = self.link(&p, &frame, &u.name, found);
        }
    }

    /// The binaries some load really maps: extension modules, files of a
    /// live process, and what they reach; of a package's own library
    /// (ctypes), what it reaches. A library only found in the runtime
    /// folder, or one no binary reaches, is mapped by nothing.
    fn mapped_by_loads(&self) -> HashSet<PathBuf> {
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut stack: Vec<PathBuf> = Vec::new();
        for n in self.nodes.values() {
            match n.root {
                Some(RootKind::ExtensionModule | RootKind::Mapped) => stack.push(n.real.clone()),
                Some(RootKind::PackageLibrary) => stack.extend(n.deps.iter().cloned()),
                _ => {}
            }
        }
        while let Some(p) = stack.pop() {
            if let Some(n) = self.nodes.get(&p) {
                if seen.insert(p) {
                    stack.extend(n.deps.iter().cloned());
                }
            }
        }
        seen
    }

    /// A dependency not found: a system library of a foreign OS that
    /// matters (Accelerate, vcomp140) becomes a library entry; others are
    /// reported as unresolved unless they are the OS's own.
    fn unresolved_dependency(&mut self, request: &str, requester: &Path, info: &BinaryInfo) {
        // On a foreign tree the target's own libraries are absent by
        // nature; on macOS the system frameworks live in the dyld shared
        // cache, not on disk. Elsewhere a missing runtime is just missing.
        let absent_by_nature = self.foreign
            || (self.loader.target == Some(OsFamily::Macos)
                && (request.starts_with("/System/") || request.starts_with("/usr/lib/")));
        if absent_by_nature && fingerprint(request, &BinaryInfo::default()).is_some() {
            let key = PathBuf::from(request);
            let node = self.nodes.entry(key.clone()).or_insert_with(|| {
                let mut node = Node::new(key.clone(), Arc::new(BinaryInfo::default()));
                node.reached_via = vec![
                    format!("{} needs {request}", requester.display()),
                    "not present here: a library of the target system".to_owned(),
                ];
                node.present = false;
                node
            });
            node.requested_as.insert(request.to_owned());
            node.needed_by.insert(requester.to_path_buf());
            for imp in &info.imports {
                if imp.contains("$NEWLAPACK") {
                    node.importer_markers.insert(imp.clone());
                }
            }
            if let Some(n) = self.nodes.get_mut(requester) {
                n.deps.insert(key);
            }
            return;
        }
        if !is_system_library(request, self.loader.target) {
            self.unresolved.insert(Unresolved {
                name: request.to_owned(),
                needed_by: requester.to_path_buf(),
            });
            if let Some(n) = self.nodes.get_mut(requester) {
                if !n.unresolved.iter().any(|r| r == request) {
                    n.unresolved.push(request.to_owned());
                }
            }
        }
    }

    /// Every package reaches what its binaries reach, and every library
    /// learns the load roots it is reached from.
    pub(super) fn propagate_packages(&mut self) {
        let starts: Vec<(PathBuf, BTreeSet<String>, Option<RootKind>)> = self
            .nodes
            .values()
            .filter(|n| !n.packages.is_empty() || n.root.is_some())
            .map(|n| (n.real.clone(), n.packages.clone(), n.root))
            .collect();
        for (start, packages, root) in starts {
            let package = packages.iter().next().cloned();
            let mut seen = HashSet::new();
            let mut stack = vec![start.clone()];
            while let Some(p) = stack.pop() {
                if !seen.insert(p.clone()) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&p) {
                    n.packages.extend(packages.iter().cloned());
                    if let Some(kind) = root {
                        let slot = n
                            .roots
                            .entry((kind, package.clone()))
                            .or_insert_with(|| (start.clone(), 0));
                        slot.1 += 1;
                    }
                    stack.extend(n.deps.iter().cloned());
                }
            }
        }
    }
}

impl Node {
    pub(super) fn new(real: PathBuf, info: Arc<BinaryInfo>) -> Self {
        Node {
            real,
            info,
            requested_as: BTreeSet::new(),
            needed_by: BTreeSet::new(),
            deps: BTreeSet::new(),
            packages: BTreeSet::new(),
            reached_via: Vec::new(),
            importer_markers: BTreeSet::new(),
            present: true,
            root: None,
            roots: BTreeMap::new(),
            unresolved: Vec::new(),
            retries: 0,
        }
    }

    /// Its load roots, as facts.
    pub(super) fn load_roots(&self) -> Vec<LoadRoot> {
        self.roots
            .iter()
            .map(|((kind, package), (path, count))| LoadRoot {
                kind: *kind,
                package: package.clone(),
                path: path.clone(),
                count: *count,
            })
            .collect()
    }
}

// Linux only: the host's own ELF loader and libc resolve the fixture.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The site-packages of the numpy 1.x fixture venv.
    fn numpy1_site() -> PathBuf {
        let root = std::env::var_os("CAICLUST_FIXTURES")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.fixtures"));
        let sp = root.join("venv-numpy1/lib/python3.11/site-packages");
        assert!(
            sp.is_dir(),
            "fixtures missing: {}; run scripts/setup-test-envs.sh first",
            sp.display()
        );
        sp
    }

    fn find(dir: &Path, prefix: &str) -> PathBuf {
        let found = std::fs::read_dir(dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| file_name_string(p).starts_with(prefix));
        let path = found.unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()));
        crate::canon::canonicalize(&path).unwrap_or(path)
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for rest in permutations(n - 1) {
            for at in 0..=rest.len() {
                let mut p = rest.clone();
                p.insert(at, n - 1);
                out.push(p);
            }
        }
        out
    }

    /// A live process's mapped files are all roots, met in address order
    /// (which ASLR changes from run to run). numpy 1.x's OpenBLAS finds
    /// its libgfortran, and that its libquadmath, only through the
    /// `DT_RPATH` the extension module passes down (`LD_DEBUG=libs`: "RPATH
    /// from file .../_multiarray_umath..."): in every order, nothing is
    /// missing and the OpenBLAS loads the libgfortran beside it.
    #[test]
    fn mapped_roots_in_any_order_resolve_through_the_loaders_rpath() {
        let sp = numpy1_site();
        let files = [
            find(&sp.join("numpy/core"), "_multiarray_umath"),
            find(&sp.join("numpy.libs"), "libopenblas"),
            find(&sp.join("numpy.libs"), "libgfortran"),
            find(&sp.join("numpy.libs"), "libquadmath"),
        ];
        for order in permutations(files.len()) {
            let result = scan(ScanRequest {
                roots: order.iter().map(|i| files[*i].clone()).collect(),
                mode: ScanMode::Mapped,
                loader: Loader::for_host(&BTreeMap::new(), None),
                runtime_dirs: Vec::new(),
            });
            assert!(
                result.summary.unresolved.is_empty(),
                "order {order:?}: {:?}",
                result.summary.unresolved
            );
            let blas = result
                .libraries
                .iter()
                .find(|l| l.path == files[1])
                .expect("the OpenBLAS");
            assert!(
                blas.dependencies.contains(&files[2]),
                "order {order:?}: {:?}",
                blas.dependencies
            );
        }
    }
}
