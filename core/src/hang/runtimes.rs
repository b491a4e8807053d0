//! Which libraries are threading runtimes: the OpenMP runtimes (libgomp,
//! libomp, libiomp5), TBB, and the threaded BLAS libraries (OpenBLAS, MKL,
//! BLIS). Known by the probe's fingerprints: from the file name when it
//! says enough, else from the library's contents, read once and
//! remembered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caiclust_probe::{fingerprint, read_binary, Api, BinaryInfo, Fingerprint, Vendor};

/// Libraries already looked at, with their verdicts.
#[derive(Debug, Default)]
pub(super) struct Runtimes {
    known: HashMap<PathBuf, Option<Vendor>>,
}

impl Runtimes {
    /// The vendor of `path` when it is a threading runtime. When its name
    /// says nothing, its contents are read (once for each path: a
    /// stripped or renamed runtime, but also libc, the first time a
    /// process is seen waiting there).
    pub fn identify(&mut self, path: &Path) -> Option<Vendor> {
        if let Some(v) = by_name(path) {
            return Some(v);
        }
        *self.known.entry(path.to_path_buf()).or_insert_with(|| {
            read_binary(path)
                .ok()
                .and_then(|info| fingerprint(&path.to_string_lossy(), &info))
                .as_ref()
                .and_then(threading)
        })
    }
}

/// The vendor of `path` when its file name alone shows a threading
/// runtime. No I/O.
pub(super) fn by_name(path: &Path) -> Option<Vendor> {
    fingerprint(&path.to_string_lossy(), &BinaryInfo::default())
        .as_ref()
        .and_then(threading)
}

/// The first threading runtime among `paths` by name, an OpenMP runtime
/// before any other (the OpenMP builds of the BLAS libraries wait in it).
pub(super) fn pick_by_name(paths: &[PathBuf]) -> Option<&PathBuf> {
    let runtimes: Vec<(&PathBuf, Vendor)> = paths
        .iter()
        .filter_map(|p| by_name(p).map(|v| (p, v)))
        .collect();
    runtimes
        .iter()
        .find(|(_, v)| v.is_openmp())
        .or(runtimes.first())
        .map(|(p, _)| *p)
}

fn threading(fp: &Fingerprint) -> Option<Vendor> {
    let vendor = fp.vendor.value;
    let threaded = fp.apis.iter().any(|a| matches!(a, Api::Openmp | Api::Tbb))
        || matches!(vendor, Vendor::Openblas | Vendor::Mkl | Vendor::Blis);
    threaded.then_some(vendor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_by_name() {
        for (path, vendor) in [
            (
                "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0",
                Vendor::GnuOpenmp,
            ),
            (
                "/venv/lib/python3.11/site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0",
                Vendor::GnuOpenmp,
            ),
            ("/opt/intel/lib/libiomp5.so", Vendor::IntelOpenmp),
            ("/usr/lib/llvm-16/lib/libomp.so.5", Vendor::LlvmOpenmp),
            (
                "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblasp-r0.3.21.so",
                Vendor::Openblas,
            ),
            (
                "/venv/numpy.libs/libscipy_openblas64_-32a4b2a6.so",
                Vendor::Openblas,
            ),
            ("/usr/lib/x86_64-linux-gnu/libtbb.so.12", Vendor::Tbb),
        ] {
            assert_eq!(by_name(Path::new(path)), Some(vendor), "{path}");
        }
        for path in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
        ] {
            assert_eq!(by_name(Path::new(path)), None, "{path}");
        }
    }

    #[test]
    fn an_openmp_runtime_is_picked_first() {
        let paths: Vec<PathBuf> = [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblasp-r0.3.21.so",
            "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(pick_by_name(&paths), Some(&paths[2]));
        assert_eq!(pick_by_name(&paths[..2]), Some(&paths[1]));
        assert_eq!(pick_by_name(&paths[..1]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn contents_tell_when_the_name_does_not() {
        // This test program's own libc is no runtime; read once, then
        // remembered.
        let libc = crate::probe::loaded_libraries_of_this_process()
            .expect("own libraries")
            .into_iter()
            .find(|p| p.to_string_lossy().contains("libc.so"))
            .expect("libc is loaded");
        let mut r = Runtimes::default();
        assert_eq!(r.identify(&libc), None);
        assert!(r.known.contains_key(&libc));
    }
}
