//! What each installed distribution requires, by import name: the
//! declared dependencies (`Requires-Dist` in `*.dist-info/METADATA`,
//! `requires.txt` in `*.egg-info`), without the optional ones (`extra ==`),
//! mapped from distribution names to the top-level names they install
//! (`top_level.txt`, else the first component of each `RECORD` path).
//!
//! The rules use it to follow a script's imports into the packages those
//! import (`import caiman` reaches scikit-learn's libgomp): what a package
//! declares it needs is what it imports, read without running anything.
//! Folders or files that cannot be read are left out; nothing here fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Import name → the import names of the installed distributions its own
/// distribution requires (sorted, without itself).
pub(crate) fn read_requires(site_packages: &[PathBuf]) -> BTreeMap<String, Vec<String>> {
    let mut installs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for dir in site_packages {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((stem, egg)) = name
                .strip_suffix(".dist-info")
                .map(|s| (s, false))
                .or_else(|| name.strip_suffix(".egg-info").map(|s| (s, true)))
            else {
                continue;
            };
            let dist = normalize(stem.split('-').next().unwrap_or(stem));
            let meta = entry.path();
            let tops = top_level_names(&meta);
            if tops.is_empty() {
                continue;
            }
            installs.entry(dist.clone()).or_default().extend(tops);
            needs
                .entry(dist)
                .or_default()
                .extend(required_distributions(&meta, egg));
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (dist, tops) in &installs {
        let required: BTreeSet<&String> = needs
            .get(dist)
            .into_iter()
            .flatten()
            .filter_map(|d| installs.get(d))
            .flatten()
            .collect();
        for top in tops {
            let list: Vec<String> = required
                .iter()
                .filter(|r| **r != top)
                .map(|r| (*r).clone())
                .collect();
            if !list.is_empty() {
                out.entry(top.clone()).or_default().extend(list);
            }
        }
    }
    for list in out.values_mut() {
        list.sort();
        list.dedup();
    }
    out
}

/// PEP 503 normalisation, with `_` as the separator (as folder names are).
fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        match c {
            '-' | '_' | '.' => {
                if !out.ends_with('_') {
                    out.push('_');
                }
            }
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The importable top-level names a distribution installs.
fn top_level_names(meta: &Path) -> BTreeSet<String> {
    if let Ok(text) = std::fs::read_to_string(meta.join("top_level.txt")) {
        let names: BTreeSet<String> = text
            .lines()
            .map(|l| l.trim().replace('/', "."))
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split('.').next().map(str::to_string))
            .collect();
        if !names.is_empty() {
            return names;
        }
    }
    let Ok(record) = std::fs::read_to_string(meta.join("RECORD")) else {
        return BTreeSet::new();
    };
    record
        .lines()
        .filter_map(|line| line.split(',').next())
        .filter_map(|path| {
            let first = path.split('/').next()?;
            let module = match path.contains('/') {
                true => first,
                false => first.strip_suffix(".py").or_else(|| {
                    // A single-file extension module: name.cpython-…so
                    (first.ends_with(".so") || first.ends_with(".pyd"))
                        .then(|| first.split('.').next())
                        .flatten()
                })?,
            };
            let importable = !module.is_empty()
                && !module.starts_with(['.', '_'])
                && !module.contains(['.', '-'])
                && module != "__pycache__";
            importable.then(|| module.to_string())
        })
        .collect()
}

/// The distributions a distribution requires, optional ones left out.
fn required_distributions(meta: &Path, egg: bool) -> BTreeSet<String> {
    if egg {
        let Ok(text) = std::fs::read_to_string(meta.join("requires.txt")) else {
            return BTreeSet::new();
        };
        // Sections (`[extra]`, `[:python_version < "3.10"]`) follow the
        // unconditional requirements.
        return text
            .lines()
            .take_while(|l| !l.trim_start().starts_with('['))
            .filter_map(requirement_name)
            .collect();
    }
    let Ok(text) = std::fs::read_to_string(meta.join("METADATA")) else {
        return BTreeSet::new();
    };
    text.lines()
        // The headers end at the first empty line (the description follows).
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("Requires-Dist:"))
        .filter(|req| {
            !req.split_once(';')
                .is_some_and(|(_, marker)| marker.contains("extra"))
        })
        .filter_map(requirement_name)
        .collect()
}

/// `scikit_learn` of `scikit-learn[alldeps] (>=1.0) ; python_version >= "3.9"`.
fn requirement_name(req: &str) -> Option<String> {
    let req = req.trim();
    let end = req
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(req.len());
    let name = &req[..end];
    (!name.is_empty()).then(|| normalize(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(site: &Path, folder: &str, files: &[(&str, &str)]) {
        let d = site.join(folder);
        std::fs::create_dir_all(&d).unwrap();
        for (name, text) in files {
            std::fs::write(d.join(name), text).unwrap();
        }
    }

    #[test]
    fn requirements_map_to_import_names_without_extras() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path();
        dist(site, "caiman-1.11.dist-info", &[
            ("METADATA", "Name: caiman\nRequires-Dist: scikit-learn (>=1.0)\nRequires-Dist: numpy; python_version >= \"3.9\"\nRequires-Dist: lightgbm ; extra == \"boost\"\n\nRequires-Dist: not-a-header\n"),
            ("top_level.txt", "caiman\n"),
        ]);
        dist(site, "scikit_learn-1.9.1.dist-info", &[
            ("METADATA", "Name: scikit-learn\nRequires-Dist: numpy>=1.22\n\n"),
            ("RECORD", "sklearn/__init__.py,sha256=x,1\nsklearn/cluster/_k_means.so,,\nscikit_learn.libs/libgomp-e985bcbb.so.1.0.0,,\nscikit_learn-1.9.1.dist-info/METADATA,,\n"),
        ]);
        dist(
            site,
            "numpy-2.4.6.dist-info",
            &[
                ("METADATA", "Name: numpy\n\n"),
                ("RECORD", "numpy/__init__.py,,\n../../../bin/f2py,,\n"),
            ],
        );
        dist(
            site,
            "lightgbm-4.7.0.dist-info",
            &[
                ("METADATA", "Name: lightgbm\nRequires-Dist: numpy\n\n"),
                ("RECORD", "lightgbm/__init__.py,,\n"),
            ],
        );
        dist(
            site,
            "threadpoolctl-3.8.0.dist-info",
            &[
                ("METADATA", "Name: threadpoolctl\n\n"),
                ("RECORD", "threadpoolctl.py,,\n"),
            ],
        );
        let got = read_requires(&[site.to_path_buf(), site.join("missing")]);
        assert_eq!(got["caiman"], vec!["numpy", "sklearn"]);
        assert_eq!(got["sklearn"], vec!["numpy"]);
        assert_eq!(got["lightgbm"], vec!["numpy"]);
        assert!(!got.contains_key("numpy"));
        assert_eq!(
            top_level_names(&site.join("threadpoolctl-3.8.0.dist-info")),
            BTreeSet::from(["threadpoolctl".to_string()])
        );
    }

    #[test]
    fn egg_info_requirements_stop_at_the_first_section() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path();
        dist(
            site,
            "old_pkg-0.1-py3.11.egg-info",
            &[
                ("requires.txt", "numpy\n\n[plots]\nmatplotlib\n"),
                ("top_level.txt", "old_pkg\n"),
            ],
        );
        dist(
            site,
            "numpy-2.4.6.dist-info",
            &[("RECORD", "numpy/__init__.py,,\n")],
        );
        dist(
            site,
            "matplotlib-3.9.dist-info",
            &[("RECORD", "matplotlib/__init__.py,,\n")],
        );
        assert_eq!(
            read_requires(&[site.to_path_buf()])["old_pkg"],
            vec!["numpy"]
        );
    }
}
