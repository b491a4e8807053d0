//! Acceptance: wheels for macOS and Windows, fetched with `pip download
//! --platform ...` and unpacked, read on Linux with `probe --tree`.

use std::path::Path;

use caiclust_probe::{
    probe_tree, BinaryFormat, Facts, IntWidth, OsFamily, ProbeOptions, ThreadingLayer, Vendor,
};
use caiclust_tests::{fixtures, run_threadpoolctl, wheel};

fn probe(dir: &Path) -> Facts {
    probe_tree(dir, &ProbeOptions::default())
        .unwrap_or_else(|e| panic!("probe {}: {e}", dir.display()))
}

#[test]
fn numpy_macos_arm64_uses_accelerate() {
    let fx = fixtures();
    let facts = probe(fx.wheel(wheel::NUMPY_MACOS_ARM64_ACCELERATE));
    assert_eq!(facts.target_os, OsFamily::Macos);
    let acc = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::Accelerate)
        .expect("Accelerate reported");
    assert!(acc.path.to_string_lossy().contains("Accelerate.framework"));
    assert_eq!(acc.format, None, "a system framework, not in the wheel");
    assert!(acc.pulled_in_by.iter().any(|p| p == "numpy"));
    assert_eq!(
        acc.int_width.as_ref().map(|w| w.value),
        Some(IntWidth::Ilp64),
        "numpy 2 uses $NEWLAPACK$ILP64"
    );
    assert!(
        facts
            .libraries
            .iter()
            .all(|l| l.vendor.value != Vendor::Openblas),
        "the Accelerate wheel bundles no OpenBLAS"
    );
    assert!(
        facts.scan.unresolved.is_empty(),
        "{:#?}",
        facts.scan.unresolved
    );
}

#[test]
fn numpy_windows_uses_scipy_openblas_named_by_its_export_table() {
    let fx = fixtures();
    let facts = probe(fx.wheel(wheel::NUMPY_WIN_AMD64));
    assert_eq!(facts.target_os, OsFamily::Windows);
    let ob: Vec<_> = facts.libraries_of(Vendor::Openblas).collect();
    assert_eq!(ob.len(), 1, "{ob:#?}");
    let ob = ob[0];
    assert_eq!(ob.format, Some(BinaryFormat::Pe));
    // The file name is hash-renamed; the export directory keeps the real name.
    let file_name = ob
        .path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(file_name.contains('-'), "hash-renamed: {file_name}");
    let soname = ob.soname.as_deref().expect("export-directory name");
    assert!(soname.starts_with("libscipy_openblas64_"), "{soname}");
    assert!(
        !soname.contains('-'),
        "the export name carries no hash: {soname}"
    );
    assert!(ob
        .vendor
        .evidence
        .iter()
        .any(|e| e.detail.contains("export scipy_openblas_get_config64_")));
    assert_eq!(ob.symbol_prefix.as_deref(), Some("scipy_"));
    assert_eq!(
        ob.int_width.as_ref().map(|w| w.value),
        Some(IntWidth::Ilp64)
    );
    assert_eq!(
        ob.threading_layer.as_ref().map(|t| t.value),
        Some(ThreadingLayer::Pthreads)
    );
    assert!(ob.pulled_in_by.iter().any(|p| p == "numpy"));
    // The config string is split into code immediates on Windows; the
    // version is still recovered. Oracle: threadpoolctl's runtime answer
    // for the Linux build of the same numpy release, which pins the same
    // scipy-openblas. The setup script fetches the wheel for the venv's
    // numpy version, so the oracle always applies.
    let win_numpy = fx.wheel_info(wheel::NUMPY_WIN_AMD64).version.clone();
    assert_eq!(
        win_numpy.as_deref(),
        Some(fx.venv_pypi_version("numpy")),
        "the Windows numpy wheel is not the venv's numpy release; {}",
        caiclust_tests::SETUP_HINT
    );
    let oracle = run_threadpoolctl(&fx.venv_pypi, &["numpy"]);
    let linux = oracle
        .iter()
        .find(|p| p.filepath.to_string_lossy().contains("numpy.libs"))
        .and_then(|p| p.version.clone())
        .expect("threadpoolctl reports numpy's OpenBLAS version");
    assert_eq!(
        ob.version.as_ref().map(|v| v.value.as_str()),
        Some(linux.as_str())
    );
    assert!(ob
        .version
        .as_ref()
        .is_some_and(|v| v.evidence.iter().any(|e| e.detail.contains("immediates"))));
}

#[test]
fn sklearn_windows_uses_msvc_openmp() {
    let fx = fixtures();
    let facts = probe(fx.wheel(wheel::SKLEARN_WIN_AMD64));
    let omp = facts
        .libraries
        .iter()
        .find(|l| l.vendor.value == Vendor::MsvcOpenmp)
        .expect("vcomp reported");
    assert!(omp
        .path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with("vcomp140.dll"));
    assert_eq!(omp.format, Some(BinaryFormat::Pe));
    assert!(
        omp.needed_by.len() >= 2,
        "several sklearn modules import VCOMP140.DLL"
    );
    assert!(omp
        .requested_as
        .iter()
        .any(|r| r.eq_ignore_ascii_case("vcomp140.dll")));
}

#[test]
fn sklearn_macos_uses_bundled_llvm_openmp() {
    let fx = fixtures();
    let facts = probe(fx.wheel(wheel::SKLEARN_MACOS_ARM64));
    let omp: Vec<_> = facts.libraries_of(Vendor::LlvmOpenmp).collect();
    assert_eq!(omp.len(), 1, "{omp:#?}");
    assert_eq!(omp[0].format, Some(BinaryFormat::MachO));
    assert!(omp[0].path.ends_with("sklearn/.dylibs/libomp.dylib"));
    assert!(
        facts.scan.unresolved.is_empty(),
        "{:#?}",
        facts.scan.unresolved
    );
}

#[test]
fn macos_openblas_wheels_read_version_and_layer() {
    let fx = fixtures();
    for name in [
        wheel::NUMPY_MACOS_X86_64_OPENBLAS,
        wheel::NUMPY_MACOS_ARM64_OPENBLAS,
    ] {
        let facts = probe(fx.wheel(name));
        let ob: Vec<_> = facts.libraries_of(Vendor::Openblas).collect();
        assert_eq!(ob.len(), 1, "{name}: {ob:#?}");
        assert!(
            ob[0].version.is_some(),
            "{name}: version from the config string"
        );
        assert_eq!(
            ob[0].threading_layer.as_ref().map(|t| t.value),
            Some(ThreadingLayer::Pthreads),
            "{name}"
        );
        assert!(
            facts.scan.unresolved.is_empty(),
            "{name}: {:#?}",
            facts.scan.unresolved
        );
    }
}

#[test]
fn opencv_wheels_report_their_parallel_framework() {
    let fx = fixtures();
    for (name, framework) in [
        (wheel::OPENCV_WIN_AMD64, "Concurrency"),
        (wheel::OPENCV_MACOS_ARM64, "GCD"),
    ] {
        let facts = probe(fx.wheel(name));
        let cv = facts
            .libraries_of(Vendor::Opencv)
            .next()
            .unwrap_or_else(|| panic!("{name}: OpenCV"));
        assert_eq!(
            cv.parallel_framework.as_ref().map(|c| c.value.as_str()),
            Some(framework),
            "{name}"
        );
    }
}

#[test]
fn fat_macho_lists_both_architectures() {
    let fx = fixtures();
    let dir = fx.wheel(wheel::MARKUPSAFE_MACOS_UNIVERSAL2);
    let facts = probe(dir);
    assert_eq!(facts.target_os, OsFamily::Macos);
    assert!(facts.scan.binaries_read >= 1);
    assert!(facts.scan.skipped.is_empty(), "{:#?}", facts.scan.skipped);
    // Read the module directly too: both slices are seen.
    let module = walk(dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "so"))
        .expect("an extension module");
    let info = caiclust_probe::read_binary(&module).expect("fat binary parses");
    let mut arches = info.architectures.clone();
    arches.sort();
    assert_eq!(arches, ["aarch64", "x86_64"]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
