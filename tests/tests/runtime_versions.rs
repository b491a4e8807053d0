//! OpenMP and TBB runtime versions read statically from the real binaries in the
//! fixtures, each checked against an independent oracle: binutils
//! (`readelf`, `strings`) for what the file says, and dpkg (the installed
//! `libgomp1` version and its symbols file) for Debian's libgomp.
//!
//! Unix only: Debian's libraries, loaded.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use caiclust_probe::{
    fingerprint, probe_python, read_binary, Confidence, Facts, ProbeOptions, Vendor,
};
use caiclust_tests::{fixtures, wheel};

/// Run a binutils (or dpkg) command and return its standard output.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The strings `readelf -p SECTION` prints, one per entry.
fn readelf_strings(file: &Path, section: &str) -> Vec<String> {
    let text = tool("readelf", &["-p", section, &file.to_string_lossy()]);
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix('[')?;
            let (_, s) = rest.split_once(']')?;
            Some(s.trim().to_owned())
        })
        .collect()
}

/// The version definitions `readelf -V` lists (the file's own name excluded).
fn readelf_version_defs(file: &Path) -> Vec<String> {
    let text = tool("readelf", &["-V", "-W", &file.to_string_lossy()]);
    let mut defs = Vec::new();
    let mut in_defs = false;
    for line in text.lines() {
        if line.contains("Version definition section") {
            in_defs = true;
            continue;
        }
        if line.contains("Version needs section") || line.contains("Version symbols section") {
            in_defs = false;
        }
        if in_defs && line.contains("Flags:") && !line.contains("BASE") {
            if let Some(name) = line.split("Name:").nth(1) {
                defs.push(name.trim().to_owned());
            }
        }
    }
    defs
}

fn version_parts(text: &str) -> Vec<u64> {
    text.split('.')
        .map_while(|p| p.parse::<u64>().ok())
        .collect()
}

fn fingerprint_file(path: &Path) -> caiclust_probe::Fingerprint {
    let info = read_binary(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let name = path.file_name().expect("file name").to_string_lossy();
    fingerprint(&name, &info).unwrap_or_else(|| panic!("{} is a runtime", path.display()))
}

fn probe_pypi_venv() -> Facts {
    let fx = fixtures();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "LD_LIBRARY_PATH" && k != "VIRTUAL_ENV" && k != "CONDA_PREFIX")
        .collect();
    probe_python(&ProbeOptions {
        python: Some(fx.venv_pypi.clone()),
        target_os: None,
        env: Some(env),
    })
    .expect("probe the PyPI venv")
}

#[test]
fn pypi_scikit_learn_libgomp_has_the_gcc_release_its_build_recorded() {
    let facts = probe_pypi_venv();
    let gomp = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::GnuOpenmp)
        .expect("scikit-learn's libgomp is found");
    assert!(
        gomp.path
            .to_string_lossy()
            .contains("scikit_learn.libs/libgomp"),
        "{}",
        gomp.path.display()
    );
    // Oracle 1: the annobin note naming the compiler that ran.
    let notes = readelf_strings(&gomp.path, ".gnu.build.attributes");
    let running: Vec<&str> = notes
        .iter()
        .filter_map(|n| n.split("running gcc ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(
        !running.is_empty(),
        "readelf shows the annobin notes: {notes:?}"
    );
    // Oracle 2: the package named in the debug link.
    let link = readelf_strings(&gomp.path, ".gnu_debuglink");
    let link = link.first().expect("a debug link");
    let package_version = link
        .split('-')
        .nth(1)
        .expect("libgomp.so.1.0.0-<version>-<release>.<arch>.debug");
    assert!(
        running.iter().all(|v| *v == package_version),
        "{running:?} vs {link}"
    );

    let version = gomp.version.as_ref().expect("a version");
    assert_eq!(version.value, package_version, "{version:#?}");
    let evidence: Vec<&str> = version.evidence.iter().map(|e| e.detail.as_str()).collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("annobin") && e.contains(package_version)),
        "{evidence:?}"
    );
    assert!(evidence.iter().any(|e| e.contains(link)), "{evidence:?}");
    // Its version nodes reach GOMP_5.0 / OMP_5.0 (GCC 9 interfaces), newer
    // than the GCC 8 that built it: the conclusion says so.
    let defs = readelf_version_defs(&gomp.path);
    if defs.iter().any(|d| d == "GOMP_5.0") && version_parts(package_version)[0] < 9 {
        assert_eq!(version.confidence, Confidence::Medium);
        assert!(
            evidence.iter().any(|e| e.contains("newer than GCC")),
            "{evidence:?}"
        );
    }
}

/// The GCC release that first shipped each version node, from Debian's
/// own symbols file for the installed libgomp1.
fn debian_symbols_table() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string("/var/lib/dpkg/info/libgomp1:amd64.symbols")
        .expect("Debian's libgomp1 symbols file (package libgomp1)");
    text.lines()
        .filter_map(|l| {
            let (sym, ver) = l.trim().split_once(' ')?;
            let (node, node2) = sym.split_once('@')?;
            (node == node2).then(|| (node.to_owned(), ver.trim().to_owned()))
        })
        .collect()
}

#[test]
fn debian_libgomp_gets_the_lower_bound_its_version_nodes_give() {
    let path = PathBuf::from("/usr/lib/x86_64-linux-gnu/libgomp.so.1");
    let real = std::fs::canonicalize(&path).expect("Debian's libgomp1 is installed");
    let table = debian_symbols_table();
    let defs = readelf_version_defs(&real);
    assert!(defs.iter().any(|d| d == "GOMP_1.0"), "{defs:?}");
    let expected = defs
        .iter()
        .filter_map(|d| table.get(d))
        .max_by(|a, b| version_parts(a).cmp(&version_parts(b)))
        .expect("known nodes");
    // Debian strips the build's compiler notes: no exact release in the file.
    assert!(readelf_strings(&real, ".gnu_debuglink")
        .first()
        .is_none_or(|l| !l.starts_with("libgomp")));

    let fp = fingerprint_file(&real);
    assert_eq!(fp.vendor.value, Vendor::GnuOpenmp);
    let version = fp.version.expect("a version");
    assert_eq!(version.value, format!(">={expected}"), "{version:#?}");
    assert_eq!(version.confidence, Confidence::Low);
    assert!(version
        .evidence
        .iter()
        .any(|e| e.detail.contains("lower bound")));

    // The installed package agrees: its version is at least the bound.
    let installed = tool("dpkg-query", &["-W", "-f=${Version}", "libgomp1"]);
    let installed = installed.split('-').next().expect("upstream version");
    assert!(
        version_parts(installed) >= version_parts(expected),
        "dpkg says libgomp1 {installed}, the bound is {expected}"
    );
}

#[test]
fn intel_openmp_reports_its_own_version_and_not_the_gcc_in_its_comment() {
    let fx = fixtures();
    let prefix = fx.venv_mkl.parent().and_then(Path::parent).expect("venv");
    let iomp = prefix.join("lib/libiomp5.so");
    // Oracle: the version string, as `strings` sees it.
    let text = tool("strings", &["-a", &iomp.to_string_lossy()]);
    let truth = text
        .lines()
        .find_map(|l| l.split("Intel(R) OMP version: ").nth(1))
        .map(|v| v.trim().to_owned())
        .expect("the version string");
    let fp = fingerprint_file(&iomp);
    assert_eq!(fp.vendor.value, Vendor::IntelOpenmp);
    assert_eq!(fp.version.map(|v| v.value), Some(truth));

    // Its .comment names the GCC that built some of its objects: read as
    // readelf reads it, and not taken as the runtime's version.
    let info = read_binary(&iomp).expect("read");
    let comment = readelf_strings(&iomp, ".comment");
    assert!(
        comment.iter().any(|c| c.starts_with("GCC: ")),
        "{comment:?}"
    );
    assert_eq!(info.comment, comment);
}

#[test]
fn msvc_openmp_version_comes_from_the_dll_version_resource() {
    let fx = fixtures();
    let dll = fx
        .wheel(wheel::SKLEARN_WIN_AMD64)
        .join("sklearn/.libs/vcomp140.dll");
    // Oracle: the version resource's FileVersion string (UTF-16).
    let text = tool("strings", &["-a", "-el", &dll.to_string_lossy()]);
    let lines: Vec<&str> = text.lines().collect();
    let truth = lines
        .iter()
        .position(|l| *l == "FileVersion")
        .and_then(|i| lines.get(i + 1))
        .map(|v| v.trim().to_owned())
        .expect("FileVersion in the version resource");
    let fp = fingerprint_file(&dll);
    assert_eq!(fp.vendor.value, Vendor::MsvcOpenmp);
    assert_eq!(fp.version.map(|v| v.value), Some(truth));
}

#[test]
fn llvm_libomp_gets_no_version_it_does_not_record() {
    let fx = fixtures();
    let dylib = fx
        .wheel(wheel::SKLEARN_MACOS_ARM64)
        .join("sklearn/.dylibs/libomp.dylib");
    let text = tool("strings", &["-a", &dylib.to_string_lossy()]);
    assert!(
        text.contains("LLVM OMP version: "),
        "the build stamp is there"
    );
    let fp = fingerprint_file(&dylib);
    assert_eq!(fp.vendor.value, Vendor::LlvmOpenmp);
    assert_eq!(fp.version, None);
}

#[test]
fn tbb_reports_its_release() {
    let fx = fixtures();
    for venv in [&fx.venv_mkl, &fx.venv_numba] {
        let prefix = venv.parent().and_then(Path::parent).expect("venv");
        let tbb = std::fs::canonicalize(prefix.join("lib/libtbb.so.12")).expect("libtbb");
        // Oracle: the version line, as `strings` sees it.
        let text = tool("strings", &["-a", &tbb.to_string_lossy()]);
        let truth = text
            .lines()
            .find_map(|l| l.split("TBB: VERSION").nth(1))
            .map(|v| v.trim().to_owned())
            .expect("the version string");
        let fp = fingerprint_file(&tbb);
        assert_eq!(fp.vendor.value, Vendor::Tbb);
        assert_eq!(
            fp.version.map(|v| v.value),
            Some(truth),
            "{}",
            tbb.display()
        );
    }
}
