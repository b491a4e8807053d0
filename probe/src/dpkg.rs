//! Debian's package database (`/var/lib/dpkg`): the installed package a
//! file belongs to, and its version. Some runtimes carry no version in
//! their binary (Debian's BLIS builds); the package that installed them
//! does (issue #14: "Debian BLIS's version: read it from the package
//! database").
//!
//! Read as dpkg writes it, without running `dpkg-query`: `info/*.list`
//! (one installed path per line, per package) and `status` (a stanza per
//! package with its `Version:`). Paths are compared as recorded and
//! without a leading `/usr` (merged-`/usr` systems list either). Missing
//! or unreadable files mean "not known".

use std::path::Path;

/// The folder of the database on this machine.
pub(crate) const DPKG_DB: &str = "/var/lib/dpkg";

/// The package that installed a file, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// `libblis4-openmp` (without `:arch`).
    pub package: String,
    /// As dpkg records it: `0.9.0-1`, `1:2.3-4`.
    pub version: String,
}

impl Owner {
    /// The upstream part of the version: `0.9.0` of `0.9.0-1`, `2.3` of
    /// `1:2.3-4`.
    pub fn upstream_version(&self) -> &str {
        let v = self
            .version
            .split_once(':')
            .map_or(self.version.as_str(), |(_, v)| v);
        v.rsplit_once('-').map_or(v, |(upstream, _)| upstream)
    }
}

/// The owner of `path` in the database at `db`, if a package lists it.
pub(crate) fn owner_of(db: &Path, path: &Path) -> Option<Owner> {
    let wanted = path.to_str()?;
    let alias = wanted
        .strip_prefix("/usr")
        .filter(|rest| rest.starts_with('/'));
    let mut entries: Vec<_> = std::fs::read_dir(db.join("info")).ok()?.flatten().collect();
    // Packages named like the path first (`libblis4-openmp` for
    // `.../blis-openmp/libblas.so.3`): most lookups read one list.
    entries.sort_by_key(|e| {
        (
            !named_like(&e.file_name().to_string_lossy(), wanted),
            e.file_name(),
        )
    });
    let listed = entries.iter().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let package = name.strip_suffix(".list")?;
        let text = std::fs::read_to_string(entry.path()).ok()?;
        text.lines()
            .any(|line| line == wanted || Some(line) == alias)
            .then(|| package.split(':').next().unwrap_or(package).to_string())
    })?;
    let status = std::fs::read_to_string(db.join("status")).ok()?;
    let version = installed_version(&status, &listed)?;
    Some(Owner {
        package: listed,
        version,
    })
}

/// Does a list file's package name (its letters, without a `lib` prefix
/// and digits) appear in the path?
fn named_like(list_file: &str, path: &str) -> bool {
    let package = list_file.split([':', '.']).next().unwrap_or_default();
    let core = package.strip_prefix("lib").unwrap_or(package);
    let word: String = core
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    word.len() >= 3 && path.contains(word.as_str())
}

/// The `Version:` of package `name`'s stanza in a status file.
fn installed_version(status: &str, name: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let mut package = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                package = Some(p.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            }
        }
        (package == Some(name))
            .then(|| version.map(str::to_string))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("info")).unwrap();
        std::fs::write(
            dir.path().join("info/libblis4-openmp:amd64.list"),
            "/.\n/usr/lib/x86_64-linux-gnu/blis-openmp\n/usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("info/libfoo.list"), "/lib/libfoo.so.1\n").unwrap();
        std::fs::write(
            dir.path().join("status"),
            "Package: libfoo\nStatus: install ok installed\nVersion: 1:2.3-4\n\n\
             Package: libblis4-openmp\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.9.0-1\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn the_listing_package_and_its_version() {
        let db = db();
        let got = owner_of(
            db.path(),
            Path::new("/usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3"),
        );
        let owner = got.expect("listed");
        assert_eq!(owner.package, "libblis4-openmp");
        assert_eq!(owner.version, "0.9.0-1");
        assert_eq!(owner.upstream_version(), "0.9.0");
        // Merged /usr: the package listed /lib/...
        let foo = owner_of(db.path(), Path::new("/usr/lib/libfoo.so.1")).expect("alias");
        assert_eq!(foo.upstream_version(), "2.3");
        assert_eq!(owner_of(db.path(), Path::new("/opt/other.so")), None);
        assert_eq!(
            owner_of(Path::new("/nonexistent-dpkg"), Path::new("/usr/lib/x.so")),
            None
        );
    }
}
