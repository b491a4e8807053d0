//! Which libraries a runtime query loads before the queried one: the files
//! the described process had loaded for its `DT_NEEDED` names, recursively,
//! deepest first.
//!
//! In the process, the loader satisfied each name with an object already
//! loaded under that name or SONAME, or found it through the inherited
//! `DT_RPATH` of a binary up the chain (numpy 1.x's OpenBLAS needs
//! `libgfortran-<hash>.so.5.0.0` beside it and has no RUNPATH of its own).
//! A throw-away child loading the library alone has neither, so it is
//! given those very files to load first (see
//! [`query_runtime_after`](crate::query_runtime_after)).
//!
//! Only ELF is read here: live probing reads `/proc/PID/maps`, Linux only.
//! A name the process's mapped files do not provide is left to the child's
//! loader, whose error then names it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use goblin::container::Ctx;
use goblin::elf::{Dynamic, Elf, ProgramHeader};
use goblin::strtab::Strtab;

use crate::runtime::LoadFirst;

/// The dynamic-section names of one ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DynamicNames {
    soname: Option<String>,
    needed: Vec<String>,
}

/// The files a process mapped, with their names read as needed.
pub(crate) struct MappedFiles {
    files: Vec<PathBuf>,
    by_file_name: HashMap<String, usize>,
    /// SONAME → file, read on the first name no file name matches.
    by_soname: Option<HashMap<String, usize>>,
    /// Names read so far (`None`: not an ELF file, or unreadable).
    names: HashMap<PathBuf, Option<DynamicNames>>,
}

impl MappedFiles {
    /// Index `files` (paths as the process mapped them) by file name.
    pub(crate) fn new(files: &[PathBuf]) -> Self {
        let mut by_file_name = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            if let Some(name) = f.file_name() {
                by_file_name
                    .entry(name.to_string_lossy().into_owned())
                    .or_insert(i);
            }
        }
        Self {
            files: files.to_vec(),
            by_file_name,
            by_soname: None,
            names: HashMap::new(),
        }
    }

    /// What to load before `library`, deepest first: for each name it
    /// needs, recursively, the mapped file that provides it. `library`
    /// itself is never listed.
    pub(crate) fn load_first(&mut self, library: &Path) -> Vec<LoadFirst> {
        let mut order = Vec::new();
        let mut seen = HashSet::from([library.to_path_buf()]);
        self.visit(library, &mut seen, &mut order);
        order
    }

    /// Post-order walk: the dependencies of each needed file go before it.
    fn visit(&mut self, file: &Path, seen: &mut HashSet<PathBuf>, order: &mut Vec<LoadFirst>) {
        for name in self.needed(file) {
            let Some(path) = self.provider(&name) else {
                continue;
            };
            if !seen.insert(path.clone()) {
                continue;
            }
            self.visit(&path, seen, order);
            order.push(LoadFirst { name, path });
        }
    }

    /// The `DT_NEEDED` names of `file`, in order.
    fn needed(&mut self, file: &Path) -> Vec<String> {
        self.names_of(file).map(|n| n.needed).unwrap_or_default()
    }

    fn names_of(&mut self, file: &Path) -> Option<DynamicNames> {
        self.names
            .entry(file.to_path_buf())
            .or_insert_with(|| read_dynamic_names(file))
            .clone()
    }

    /// The mapped file the loader used for `name`: one of that file name,
    /// else one with that SONAME.
    fn provider(&mut self, name: &str) -> Option<PathBuf> {
        if let Some(&i) = self.by_file_name.get(name) {
            return Some(self.files[i].clone());
        }
        if self.by_soname.is_none() {
            self.by_soname = Some(self.index_sonames());
        }
        let i = *self.by_soname.as_ref()?.get(name)?;
        Some(self.files[i].clone())
    }

    fn index_sonames(&mut self) -> HashMap<String, usize> {
        let mut index = HashMap::new();
        for (i, f) in self.files.clone().iter().enumerate() {
            if let Some(soname) = self.names_of(f).and_then(|n| n.soname) {
                index.entry(soname).or_insert(i);
            }
        }
        index
    }
}

/// `DT_SONAME` and `DT_NEEDED` of an ELF file, reading only its headers
/// and dynamic section. `None` for anything else.
fn read_dynamic_names(path: &Path) -> Option<DynamicNames> {
    let file = File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    // SAFETY: a read-only private map of a library the process has mapped
    // itself; it is not rewritten while probed (a truncation would raise
    // SIGBUS, as for the scan's own reading). Nothing borrowed from the map
    // outlives this function: the names are copied.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    // goblin returns errors on malformed input; a panic on some input it
    // did not foresee must not end the probe.
    std::panic::catch_unwind(|| parse_dynamic_names(&map)).ok()?
}

/// See [`read_dynamic_names`].
fn parse_dynamic_names(bytes: &[u8]) -> Option<DynamicNames> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let header = Elf::parse_header(bytes).ok()?;
    let ctx = Ctx::new(header.container().ok()?, header.endianness().ok()?);
    let phdrs = ProgramHeader::parse(
        bytes,
        usize::try_from(header.e_phoff).ok()?,
        usize::from(header.e_phnum),
        ctx,
    )
    .ok()?;
    let dynamic = Dynamic::parse(bytes, &phdrs, ctx).ok()??;
    let strtab = Strtab::parse(bytes, dynamic.info.strtab, dynamic.info.strsz, 0).ok()?;
    let soname = (dynamic.info.soname != 0)
        .then(|| strtab.get_at(dynamic.info.soname))
        .flatten()
        .map(str::to_owned);
    let needed = dynamic
        .get_libraries(&strtab)
        .into_iter()
        .map(str::to_owned)
        .collect();
    Some(DynamicNames { soname, needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_files_have_no_names() {
        assert_eq!(parse_dynamic_names(b"not an ELF file"), None);
        assert_eq!(parse_dynamic_names(b"\x7fELF"), None);
        assert_eq!(parse_dynamic_names(b""), None);
    }

    /// `cc -shared` of `source` into `dir/file`, with `args`.
    #[cfg(target_os = "linux")]
    fn cc(dir: &Path, file: &str, source: &str, args: &[String]) -> PathBuf {
        let src = dir.join(format!("{file}.c"));
        std::fs::write(&src, source).unwrap();
        let out = dir.join(file);
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&src)
            .args(args)
            .status()
            .expect("run cc");
        assert!(status.success(), "cc {file}");
        out
    }

    /// user needs `libmid.so.2` (the file `libmid.so.2.0.0`, found by its
    /// SONAME), which needs `libleaf-abc.so.5` (found by file name): the
    /// leaf comes first, the user is not listed, and names no mapped file
    /// provides (`libc.so.6`) are left out.
    #[cfg(target_os = "linux")]
    #[test]
    fn dependencies_come_deepest_first_matched_by_file_name_or_soname() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let link = |name: &str| vec![format!("-L{}", d.display()), format!("-l:{name}")];
        let soname = |name: &str| vec![format!("-Wl,-soname,{name}")];
        let leaf = cc(
            d,
            "libleaf-abc.so.5",
            "int leaf(void){return 1;}",
            &soname("libleaf-abc.so.5"),
        );
        let mut mid_args = soname("libmid.so.2");
        mid_args.extend(link("libleaf-abc.so.5"));
        let mid = cc(
            d,
            "libmid.so.2.0.0",
            "int leaf(void); int mid(void){return leaf();}",
            &mid_args,
        );
        // The linker wants the SONAME's file; once linked, only the
        // SONAME inside libmid.so.2.0.0 matches the name.
        std::fs::copy(&mid, d.join("libmid.so.2")).unwrap();
        let user = cc(
            d,
            "libuser.so",
            "int mid(void); int user(void){return mid();}",
            &link("libmid.so.2"),
        );
        std::fs::remove_file(d.join("libmid.so.2")).unwrap();

        let mapped = [user.clone(), mid.clone(), leaf.clone()];
        let order = MappedFiles::new(&mapped).load_first(&user);
        let got: Vec<(&str, &Path)> = order
            .iter()
            .map(|l| (l.name.as_str(), l.path.as_path()))
            .collect();
        assert_eq!(
            got,
            [
                ("libleaf-abc.so.5", leaf.as_path()),
                ("libmid.so.2", mid.as_path())
            ]
        );
    }
}
