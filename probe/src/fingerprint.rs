//! Knowing a library from its binary: tables of fingerprints matched by a
//! pure function of (file name, binary facts). Nothing is loaded.
//!
//! Evidence, most reliable first: exported API symbols (with the `scipy_`
//! prefix and `64_` suffix variants), dependencies on an OpenMP runtime and
//! ELF version needs, embedded build strings, and last the file name. Each
//! conclusion lists the observations it rests on.

use crate::binary::BinaryInfo;
use crate::facts::{
    Api, BinaryFormat, Conclusion, Confidence, Evidence, EvidenceSource, IntWidth, ThreadingLayer,
    Vendor,
};

/// What a library is, as far as its binary tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub apis: Vec<Api>,
    pub vendor: Conclusion<Vendor>,
    pub version: Option<Conclusion<String>>,
    pub threading_layer: Option<Conclusion<ThreadingLayer>>,
    /// The OpenMP runtime an OpenMP-threaded library depends on.
    pub openmp_runtime: Option<Conclusion<Vendor>>,
    pub int_width: Option<Conclusion<IntWidth>>,
    pub symbol_prefix: Option<String>,
    pub symbol_suffix: Option<String>,
    pub parallel_framework: Option<Conclusion<String>>,
    /// A thin interface library (only standard BLAS/LAPACK symbols) whose
    /// implementation is in the dependency with this file name.
    pub forwards_to: Option<String>,
}

/// An API symbol that names its vendor.
struct ExportSignature {
    symbol: &'static str,
    vendor: Vendor,
    apis: &'static [Api],
}

/// Exported symbols that identify a vendor, strongest evidence there is.
const EXPORT_SIGNATURES: &[ExportSignature] = &[
    ExportSignature {
        symbol: "openblas_get_config",
        vendor: Vendor::Openblas,
        apis: &[Api::Blas, Api::Lapack],
    },
    ExportSignature {
        symbol: "MKL_Get_Version_String",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    ExportSignature {
        symbol: "mkl_get_version_string",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    ExportSignature {
        symbol: "bli_info_get_version_str",
        vendor: Vendor::Blis,
        apis: &[Api::Blas],
    },
    ExportSignature {
        symbol: "flexiblas_current_backend",
        vendor: Vendor::Flexiblas,
        apis: &[Api::Blas, Api::Lapack],
    },
    ExportSignature {
        symbol: "TBB_runtime_interface_version",
        vendor: Vendor::Tbb,
        apis: &[Api::Tbb],
    },
    ExportSignature {
        symbol: "PyInit_cv2",
        vendor: Vendor::Opencv,
        apis: &[Api::Opencv],
    },
    ExportSignature {
        symbol: "cudaGetDeviceCount",
        vendor: Vendor::Cuda,
        apis: &[Api::Gpu],
    },
];

/// Prefixes that vendored copies put before the API names.
const SYMBOL_PREFIXES: &[&str] = &["", "scipy_"];
/// Suffixes of 64-bit-integer builds.
const SYMBOL_SUFFIXES: &[&str] = &["", "64_", "_64", "64"];

/// File-name prefixes (lower-case) of runtimes, for when symbols are
/// stripped or the file is not present (a system library referenced by a
/// foreign wheel).
struct NameSignature {
    prefix: &'static str,
    vendor: Vendor,
    apis: &'static [Api],
}

const NAME_SIGNATURES: &[NameSignature] = &[
    NameSignature {
        prefix: "libgomp",
        vendor: Vendor::GnuOpenmp,
        apis: &[Api::Openmp],
    },
    // Intel OpenMP itself (not libiomp5_db, the debugger support, nor
    // libiompstubs5, a single-threaded stub).
    NameSignature {
        prefix: "libiomp5.",
        vendor: Vendor::IntelOpenmp,
        apis: &[Api::Openmp],
    },
    NameSignature {
        prefix: "libiomp5md.",
        vendor: Vendor::IntelOpenmp,
        apis: &[Api::Openmp],
    },
    // LLVM's runtime (libomp.so, libomp-<hash>.so, libomp140.x86_64.dll),
    // not libomptarget (offloading).
    NameSignature {
        prefix: "libomp.",
        vendor: Vendor::LlvmOpenmp,
        apis: &[Api::Openmp],
    },
    NameSignature {
        prefix: "libomp-",
        vendor: Vendor::LlvmOpenmp,
        apis: &[Api::Openmp],
    },
    NameSignature {
        prefix: "libomp5",
        vendor: Vendor::LlvmOpenmp,
        apis: &[Api::Openmp],
    },
    NameSignature {
        prefix: "libomp140",
        vendor: Vendor::LlvmOpenmp,
        apis: &[Api::Openmp],
    },
    NameSignature {
        prefix: "vcomp",
        vendor: Vendor::MsvcOpenmp,
        apis: &[Api::Openmp],
    },
    NameSignature {
        prefix: "libvcomp",
        vendor: Vendor::MsvcOpenmp,
        apis: &[Api::Openmp],
    },
    // The TBB scheduler itself, not tbbmalloc or tbbbind.
    NameSignature {
        prefix: "libtbb.",
        vendor: Vendor::Tbb,
        apis: &[Api::Tbb],
    },
    NameSignature {
        prefix: "libtbb12",
        vendor: Vendor::Tbb,
        apis: &[Api::Tbb],
    },
    NameSignature {
        prefix: "tbb12.",
        vendor: Vendor::Tbb,
        apis: &[Api::Tbb],
    },
    NameSignature {
        prefix: "tbb.",
        vendor: Vendor::Tbb,
        apis: &[Api::Tbb],
    },
    // MKL's single dynamic library and its threading layers; its other
    // parts (core, kernels, interfaces, ScaLAPACK) carry no thread pool.
    NameSignature {
        prefix: "libmkl_rt",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "mkl_rt",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libmkl_intel_thread",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libmkl_gnu_thread",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libmkl_tbb_thread",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libmkl_sequential",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libmkl_pgi_thread",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "mkl_intel_thread",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "mkl_tbb_thread",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "mkl_sequential",
        vendor: Vendor::Mkl,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libscipy_openblas",
        vendor: Vendor::Openblas,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libopenblas",
        vendor: Vendor::Openblas,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "openblas",
        vendor: Vendor::Openblas,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libblis",
        vendor: Vendor::Blis,
        apis: &[Api::Blas],
    },
    NameSignature {
        prefix: "libflexiblas",
        vendor: Vendor::Flexiblas,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libatlas",
        vendor: Vendor::Atlas,
        apis: &[Api::Blas],
    },
    NameSignature {
        prefix: "libsatlas",
        vendor: Vendor::Atlas,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libtatlas",
        vendor: Vendor::Atlas,
        apis: &[Api::Blas, Api::Lapack],
    },
    NameSignature {
        prefix: "libopencv_core",
        vendor: Vendor::Opencv,
        apis: &[Api::Opencv],
    },
    NameSignature {
        prefix: "libcudart",
        vendor: Vendor::Cuda,
        apis: &[Api::Gpu],
    },
    NameSignature {
        prefix: "cudart64",
        vendor: Vendor::Cuda,
        apis: &[Api::Gpu],
    },
    NameSignature {
        prefix: "libcuda.",
        vendor: Vendor::Cuda,
        apis: &[Api::Gpu],
    },
];

/// Path fragments of Apple's Accelerate framework.
const ACCELERATE_PATHS: &[&str] = &[
    "Accelerate.framework",
    "vecLib.framework",
    "/libBLAS.dylib",
    "/libLAPACK.dylib",
];

/// Standard BLAS entry points: a library exporting these but none of the
/// vendor symbols is a BLAS of unknown make (or an interface shim).
const STANDARD_BLAS_SYMBOLS: &[&str] = &["dgemm_", "cblas_dgemm", "dgemm", "DGEMM"];

/// Identify a library from its file name (or, for a referenced system
/// library that is not present, its install path) and parsed contents.
/// Returns `None` for libraries that do not matter for threading.
pub fn fingerprint(name: &str, info: &BinaryInfo) -> Option<Fingerprint> {
    let base = base_name(name);
    let lower = base.to_ascii_lowercase();

    if ACCELERATE_PATHS.iter().any(|p| name.contains(p)) {
        return Some(accelerate(name));
    }

    // 1. Exported API symbols.
    if let Some((sig, export, prefix, suffix)) = match_export(info) {
        let mut fp = base_fingerprint(
            sig.vendor,
            sig.apis,
            Confidence::High,
            Evidence::new(EvidenceSource::Static, format!("export {export}")),
        );
        fp.symbol_prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
        fp.symbol_suffix = (!suffix.is_empty()).then(|| suffix.to_owned());
        if suffix.contains("64") {
            fp.int_width = Some(Conclusion::new(
                IntWidth::Ilp64,
                Confidence::High,
                vec![Evidence::new(
                    EvidenceSource::Static,
                    format!("export {export} has the 64-bit-integer suffix {suffix}"),
                )],
            ));
        }
        if let Some(ev) = name_evidence(&lower, sig.vendor) {
            fp.vendor.evidence.push(ev);
        }
        refine(&mut fp, base, info);
        return Some(fp);
    }

    // 2. OpenMP runtimes: by name, confirmed by their API exports; or by
    //    their exports alone.
    if let Some(sig) = match_name(&lower) {
        let mut fp = base_fingerprint(
            sig.vendor,
            sig.apis,
            Confidence::Medium,
            Evidence::new(
                EvidenceSource::FileName,
                format!("file name {base} starts with {}", sig.prefix),
            ),
        );
        if sig.vendor.is_openmp() {
            if let Some(export) = ["omp_get_max_threads", "omp_get_num_threads"]
                .iter()
                .find(|s| info.exports_symbol(s))
            {
                fp.vendor.confidence = Confidence::High;
                fp.vendor.evidence.push(Evidence::new(
                    EvidenceSource::Static,
                    format!("export {export}"),
                ));
            }
        }
        refine(&mut fp, base, info);
        return Some(fp);
    }
    if info.exports_symbol("omp_get_max_threads") {
        let (vendor, detail) = if info.exports_symbol("__kmpc_fork_call") {
            if info
                .marker_strings
                .iter()
                .any(|s| s.contains("Intel(R) OMP"))
            {
                (
                    Vendor::IntelOpenmp,
                    "export __kmpc_fork_call; string \"Intel(R) OMP\"",
                )
            } else {
                (Vendor::LlvmOpenmp, "export __kmpc_fork_call")
            }
        } else if info.exports_symbol("GOMP_parallel") || info.exports_symbol("GOMP_parallel_start")
        {
            (Vendor::GnuOpenmp, "export GOMP_parallel")
        } else if info.format == Some(BinaryFormat::Pe) {
            (Vendor::MsvcOpenmp, "PE export omp_get_max_threads")
        } else {
            (Vendor::Unknown, "export omp_get_max_threads")
        };
        let mut fp = base_fingerprint(
            vendor,
            &[Api::Openmp],
            Confidence::High,
            Evidence::new(EvidenceSource::Static, "export omp_get_max_threads"),
        );
        fp.vendor
            .evidence
            .push(Evidence::new(EvidenceSource::Static, detail));
        fp.version = openmp_runtime_version(vendor, info);
        return Some(fp);
    }

    // 3. A BLAS of unknown make, or a shim over a known one.
    if let Some(sym) = STANDARD_BLAS_SYMBOLS
        .iter()
        .find(|s| info.exports_symbol(s))
    {
        if info.marker_strings.iter().any(|m| m == "BLIS_ARCH_TYPE") {
            let mut fp = base_fingerprint(
                Vendor::Blis,
                &[Api::Blas],
                Confidence::High,
                Evidence::new(
                    EvidenceSource::Static,
                    format!("export {sym} and string \"BLIS_ARCH_TYPE\" (the variable BLIS reads to pick its kernels)"),
                ),
            );
            if info.exports_symbol("dgetrf_") {
                fp.apis.push(Api::Lapack);
            }
            refine(&mut fp, base, info);
            return Some(fp);
        }
        let mut fp = base_fingerprint(
            Vendor::Unknown,
            &[Api::Blas],
            Confidence::Medium,
            Evidence::new(EvidenceSource::Static, format!("export {sym}")),
        );
        if let Some(dep) = info.needed.iter().find(|d| {
            let l = base_name(d).to_ascii_lowercase();
            match_name(&l).is_some_and(|s| s.apis.contains(&Api::Blas))
        }) {
            fp.forwards_to = Some(dep.clone());
            fp.vendor.evidence.push(Evidence::new(
                EvidenceSource::Static,
                format!("NEEDED {dep}: the implementation is there"),
            ));
        } else if lower.starts_with("libblas") || lower.starts_with("libcblas") {
            fp.vendor.evidence.push(Evidence::new(
                EvidenceSource::FileName,
                format!("{base} with no vendor symbols: reference BLAS or a BLIS/ATLAS build"),
            ));
        }
        if info.exports_symbol("dgetrf_") {
            fp.apis.push(Api::Lapack);
        }
        refine(&mut fp, base, info);
        return Some(fp);
    }
    None
}

/// The last path component, also for `@rpath/...` and Windows paths.
pub(crate) fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

fn base_fingerprint(
    vendor: Vendor,
    apis: &[Api],
    confidence: Confidence,
    ev: Evidence,
) -> Fingerprint {
    Fingerprint {
        apis: apis.to_vec(),
        vendor: Conclusion::new(vendor, confidence, vec![ev]),
        version: None,
        threading_layer: None,
        openmp_runtime: None,
        int_width: None,
        symbol_prefix: None,
        symbol_suffix: None,
        parallel_framework: None,
        forwards_to: None,
    }
}

fn match_name(lower: &str) -> Option<&'static NameSignature> {
    NAME_SIGNATURES.iter().find(|s| lower.starts_with(s.prefix))
}

fn name_evidence(lower: &str, vendor: Vendor) -> Option<Evidence> {
    match_name(lower).filter(|s| s.vendor == vendor).map(|s| {
        Evidence::new(
            EvidenceSource::FileName,
            format!("file name starts with {}", s.prefix),
        )
    })
}

/// Find a vendor API symbol among the exports, allowing the known prefixes
/// and suffixes. Returns the signature, the export, prefix and suffix.
fn match_export(
    info: &BinaryInfo,
) -> Option<(&'static ExportSignature, &str, &'static str, &'static str)> {
    for sig in EXPORT_SIGNATURES {
        for export in &info.exports {
            // Cheap test first: the symbol starts right after a known
            // prefix (libraries export tens of thousands of names).
            let starts_after_prefix = SYMBOL_PREFIXES.iter().any(|p| {
                export
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with(sig.symbol))
            });
            if !starts_after_prefix {
                continue;
            }
            for prefix in SYMBOL_PREFIXES {
                for suffix in SYMBOL_SUFFIXES {
                    if export.len() == prefix.len() + sig.symbol.len() + suffix.len()
                        && export.starts_with(prefix)
                        && export[prefix.len()..].starts_with(sig.symbol)
                        && export.ends_with(suffix)
                    {
                        return Some((sig, export.as_str(), prefix, suffix));
                    }
                }
            }
        }
    }
    None
}

/// The OpenMP runtime a binary depends on, from its dependency list or
/// ELF version needs.
fn openmp_dependency(info: &BinaryInfo) -> Option<(Vendor, Evidence)> {
    for dep in &info.needed {
        let lower = base_name(dep).to_ascii_lowercase();
        if let Some(sig) = match_name(&lower).filter(|s| s.vendor.is_openmp()) {
            let kind = match info.format {
                Some(BinaryFormat::MachO) => "LC_LOAD_DYLIB",
                Some(BinaryFormat::Pe) => "imports",
                _ => "NEEDED",
            };
            return Some((
                sig.vendor,
                Evidence::new(EvidenceSource::Static, format!("{kind} {dep}")),
            ));
        }
    }
    for (file, versions) in &info.version_needs {
        if let Some(v) = versions.iter().find(|v| v.starts_with("GOMP_")) {
            return Some((
                Vendor::GnuOpenmp,
                Evidence::new(
                    EvidenceSource::Static,
                    format!("version need {v} from {file}"),
                ),
            ));
        }
    }
    None
}

/// Imports that show a library starts threads of its own.
const THREAD_CREATE_IMPORTS: &[&str] = &["pthread_create", "CreateThread", "_beginthreadex"];

/// Vendor-specific details: version, threading layer, integer width.
fn refine(fp: &mut Fingerprint, base: &str, info: &BinaryInfo) {
    match fp.vendor.value {
        Vendor::GnuOpenmp | Vendor::IntelOpenmp | Vendor::MsvcOpenmp => {
            fp.version = openmp_runtime_version(fp.vendor.value, info);
        }
        Vendor::Tbb => fp.version = tbb_version(info),
        Vendor::Openblas => refine_openblas(fp, info),
        Vendor::Opencv => refine_opencv(fp, info),
        Vendor::Mkl => refine_mkl(fp, base, info),
        Vendor::Blis => refine_blis(fp, base, info),
        Vendor::Flexiblas => {
            fp.threading_layer = Some(Conclusion::new(
                ThreadingLayer::RuntimeSelected,
                Confidence::High,
                vec![Evidence::new(
                    EvidenceSource::Static,
                    "FlexiBLAS chooses its backend at run time",
                )],
            ));
        }
        Vendor::Unknown => {
            if let Some((rt, ev)) = openmp_dependency(info) {
                fp.threading_layer = Some(Conclusion::new(
                    ThreadingLayer::Openmp,
                    Confidence::High,
                    vec![ev.clone()],
                ));
                fp.openmp_runtime = Some(Conclusion::new(rt, Confidence::High, vec![ev]));
            }
        }
        _ => {}
    }
}

/// GNU libgomp's ELF version nodes and the GCC release that first shipped
/// each, as Debian's `libgomp1` symbols file records them
/// (`/var/lib/dpkg/info/libgomp1:amd64.symbols`, gcc-12). A library that
/// defines a node is at least that release; the exact release is in no node.
const GOMP_VERSION_NODES: &[(&str, &str)] = &[
    ("OMP_1.0", "4.2.1"),
    ("OMP_2.0", "4.2.1"),
    ("GOMP_1.0", "4.2.1"),
    ("OMP_3.0", "4.4"),
    ("GOMP_2.0", "4.4"),
    ("OMP_3.1", "4.7"),
    ("GOMP_3.0", "4.7"),
    ("OMP_4.0", "4.9"),
    ("GOMP_4.0", "4.9"),
    ("GOMP_4.0.1", "5"),
    ("OACC_2.0", "5"),
    ("GOACC_2.0", "5"),
    ("GOMP_PLUGIN_1.0", "5"),
    ("OMP_4.5", "6"),
    ("GOMP_4.5", "6"),
    ("GOACC_2.0.1", "6"),
    ("GOMP_PLUGIN_1.1", "6"),
    ("OACC_2.0.1", "8"),
    ("OMP_5.0", "9"),
    ("GOMP_5.0", "9"),
    ("OACC_2.5", "9"),
    ("GOMP_PLUGIN_1.2", "9"),
    ("OACC_2.5.1", "10"),
    ("OACC_2.6", "10"),
    ("GOMP_PLUGIN_1.3", "10"),
    ("OMP_5.0.1", "11"),
    ("GOMP_5.0.1", "11"),
    ("OMP_5.1", "12"),
    ("GOMP_5.1", "12"),
    ("OMP_5.0.2", "12"),
    ("GOACC_2.0.2", "12"),
];

/// Where a libgomp's version comes from, most direct first.
const GOMP_VERSION_SOURCES: &str = "ELF .comment, annobin notes, .gnu_debuglink";

/// The leading numeric components of a version: `8.5.0` → [8, 5, 0].
fn version_parts(text: &str) -> Vec<u64> {
    text.split('.')
        .map_while(|p| p.parse::<u64>().ok())
        .collect()
}

fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (version_parts(a), version_parts(b));
    for i in 0..a.len().max(b.len()) {
        let ord = a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0));
        if ord.is_ne() {
            return ord;
        }
    }
    std::cmp::Ordering::Equal
}

/// A dotted numeric version such as `8.5.0` or `12`.
fn is_dotted_version(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The GCC release in a `.comment` entry: `GCC: (GNU) 10.2.1 20210130
/// (Red Hat 10.2.1-11)` → `10.2.1`, `GCC: (Debian 12.2.0-14) 12.2.0` →
/// `12.2.0`.
fn gcc_from_comment(entry: &str) -> Option<&str> {
    let rest = entry.strip_prefix("GCC: ")?;
    let rest = match rest.strip_prefix('(') {
        // The vendor string may itself hold parentheses.
        Some(inner) => {
            let mut depth = 1usize;
            let close = inner.char_indices().find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })?;
            &inner[close + 1..]
        }
        None => rest,
    };
    rest.split_whitespace()
        .next()
        .filter(|v| is_dotted_version(v))
}

/// The GCC release in an annobin note: `running gcc 8.5.0 20210514` → `8.5.0`.
fn gcc_from_note(note: &str) -> Option<&str> {
    note.strip_prefix("running gcc ")?
        .split_whitespace()
        .next()
        .filter(|v| is_dotted_version(v))
}

/// The package version in a Red Hat-style debug-link name:
/// `libgomp.so.1.0.0-8.5.0-28.el8_10.alma.1.x86_64.debug` →
/// (`8.5.0`, `28.el8_10.alma.1.x86_64`).
fn package_from_debuglink(link: &str) -> Option<(&str, &str)> {
    let stem = link.strip_suffix(".debug")?;
    if !stem.starts_with("libgomp") {
        return None;
    }
    let mut parts = stem.splitn(3, '-');
    parts.next()?;
    let version = parts.next().filter(|v| is_dotted_version(v))?;
    let release = parts.next()?;
    Some((version, release))
}

/// GNU libgomp's GCC release, read statically. The exact release comes
/// from what the build left in the binary (the `.comment` compiler line,
/// Red Hat's annobin notes or package-named debug link); without any of
/// them, the newest ELF version node gives a lower bound, reported as
/// `>=N`. When the version nodes are newer than the compiler that built the
/// library (Red Hat's GCC 8 ships a libgomp with GCC 9 interfaces), both
/// are shown and the confidence drops.
fn gnu_openmp_version(info: &BinaryInfo) -> Option<Conclusion<String>> {
    let mut exact: Option<(String, Evidence)> = None;
    let mut support = Vec::new();
    let from_comment = info
        .comment
        .iter()
        .filter_map(|c| gcc_from_comment(c).map(|v| (v, c)))
        .max_by(|a, b| version_cmp(a.0, b.0));
    if let Some((v, c)) = from_comment {
        exact = Some((
            v.to_owned(),
            Evidence::new(
                EvidenceSource::Static,
                format!("ELF .comment \"{c}\": built by GCC {v}"),
            ),
        ));
    }
    if let Some((v, n)) = info
        .build_notes
        .iter()
        .find_map(|n| gcc_from_note(n).map(|v| (v, n)))
    {
        let ev = Evidence::new(
            EvidenceSource::Static,
            format!("annobin note \"{n}\" in .gnu.build.attributes: built by GCC {v}"),
        );
        match &exact {
            None => exact = Some((v.to_owned(), ev)),
            Some(_) => support.push(ev),
        }
    }
    let mut from_link_only = false;
    if let Some((v, release)) = info.debuglink.as_deref().and_then(package_from_debuglink) {
        let ev = Evidence::new(
            EvidenceSource::Static,
            format!(
                ".gnu_debuglink {}: built in package gcc-{v}-{release}",
                info.debuglink.as_deref().unwrap_or_default()
            ),
        );
        match &exact {
            None => {
                exact = Some((v.to_owned(), ev));
                from_link_only = true;
            }
            Some(_) => support.push(ev),
        }
    }
    // The newest node the library defines; on a tie the table's first
    // (the OpenMP API nodes come before the plugin and OpenACC ones).
    let bound = GOMP_VERSION_NODES
        .iter()
        .filter(|(node, _)| info.version_defs.iter().any(|d| d == node))
        .fold(
            None,
            |best: Option<(&str, &str)>, &(node, gcc)| match best {
                Some((_, b)) if version_cmp(gcc, b).is_le() => best,
                _ => Some((node, gcc)),
            },
        );
    let bound_evidence = bound.map(|(node, gcc)| {
        Evidence::new(
            EvidenceSource::Static,
            format!("version node {node}, first shipped with GCC {gcc} (Debian's libgomp1 symbols): GCC {gcc} or later"),
        )
    });
    match (exact, bound) {
        (Some((v, ev)), bound) => {
            let mut evidence = vec![ev];
            evidence.extend(support);
            let mut confidence = if from_link_only {
                Confidence::Medium
            } else {
                Confidence::High
            };
            if let (Some((_, gcc)), Some(bev)) = (bound, bound_evidence) {
                // A lower bound above the build's major release means the
                // library's interfaces are newer than its compiler.
                let major_of = |x: &str| version_parts(x).first().copied().unwrap_or(0);
                if major_of(gcc) > major_of(&v) {
                    confidence = Confidence::Medium;
                    evidence.push(Evidence::new(
                        EvidenceSource::Static,
                        format!(
                            "{}; its interfaces are newer than GCC {v}, so the distribution patched in a newer libgomp",
                            bev.detail
                        ),
                    ));
                } else {
                    evidence.push(bev);
                }
            }
            Some(Conclusion::new(v, confidence, evidence))
        }
        (None, Some((_, gcc))) => {
            let mut evidence: Vec<Evidence> = bound_evidence.into_iter().collect();
            evidence.push(Evidence::new(
                EvidenceSource::Static,
                format!("no exact release recorded ({GOMP_VERSION_SOURCES} absent or unnamed): a lower bound"),
            ));
            Some(Conclusion::new(
                format!(">={gcc}"),
                Confidence::Low,
                evidence,
            ))
        }
        (None, None) => None,
    }
}

/// An OpenMP runtime's version, where its binary records one. LLVM's
/// libomp records none that names its release: its "LLVM OMP version:
/// 5.0.<build>" string holds the OpenMP library interface version and a
/// build stamp (the macOS scikit-learn wheel's libomp.dylib says
/// 5.0.20140926 and was built by Clang 11.1), so no version is concluded.
fn openmp_runtime_version(vendor: Vendor, info: &BinaryInfo) -> Option<Conclusion<String>> {
    match vendor {
        Vendor::GnuOpenmp => gnu_openmp_version(info),
        Vendor::IntelOpenmp => intel_openmp_version(info),
        Vendor::MsvcOpenmp => msvc_openmp_version(info),
        _ => None,
    }
}

/// Intel OpenMP's own version string, `Intel(R) OMP version: 5.0.20260828`
/// (the OpenMP library's version and its build date).
fn intel_openmp_version(info: &BinaryInfo) -> Option<Conclusion<String>> {
    info.marker_strings.iter().find_map(|s| {
        let v = s
            .strip_prefix("Intel(R) OMP version: ")?
            .split_whitespace()
            .next()
            .filter(|v| is_dotted_version(v))?;
        Some(Conclusion::new(
            v.to_owned(),
            Confidence::High,
            vec![Evidence::new(
                EvidenceSource::Static,
                format!("string \"{s}\""),
            )],
        ))
    })
}

/// TBB's release from its version string `oneTBB: VERSION\t\t2023.2.0`.
fn tbb_version(info: &BinaryInfo) -> Option<Conclusion<String>> {
    info.marker_strings.iter().find_map(|s| {
        let v = s
            .strip_prefix("TBB: VERSION")?
            .split_whitespace()
            .next()
            .filter(|v| is_dotted_version(v))?;
        Some(Conclusion::new(
            v.to_owned(),
            Confidence::High,
            vec![Evidence::new(
                EvidenceSource::Static,
                format!("string \"{}\"", s.replace('\t', " ")),
            )],
        ))
    })
}

/// The MSVC OpenMP runtime's (`vcomp140.dll`) file version, from its PE
/// version resource: the Visual C++ redistributable it ships with.
fn msvc_openmp_version(info: &BinaryInfo) -> Option<Conclusion<String>> {
    info.file_version.as_ref().map(|v| {
        Conclusion::new(
            v.clone(),
            Confidence::High,
            vec![Evidence::new(
                EvidenceSource::Static,
                format!("PE version resource (VS_FIXEDFILEINFO): file version {v}"),
            )],
        )
    })
}

fn refine_openblas(fp: &mut Fingerprint, info: &BinaryInfo) {
    // The config string "OpenBLAS 0.3.30 DYNAMIC_ARCH ..." gives the version
    // and build options; old pthreads builds also mention USE_OPENMP=1 in an
    // error message, so only a whole token counts.
    let config = info.marker_strings.iter().find(|s| {
        s.strip_prefix(crate::binary::IMMEDIATES_PREFIX)
            .unwrap_or(s)
            .strip_prefix("OpenBLAS ")
            .and_then(|r| r.chars().next())
            .is_some_and(|c| c.is_ascii_digit())
    });
    let (config, config_evidence) = match config {
        Some(c) => match c.strip_prefix(crate::binary::IMMEDIATES_PREFIX) {
            Some(rebuilt) => (
                Some(rebuilt),
                format!("config \"{rebuilt}...\" rebuilt from movabs immediates in the code"),
            ),
            None => (Some(c.as_str()), format!("string \"{c}\"")),
        },
        None => (None, String::new()),
    };
    if let Some(config) = config {
        if let Some(version) = config.split_whitespace().nth(1) {
            fp.version = Some(Conclusion::new(
                version.to_owned(),
                Confidence::High,
                vec![Evidence::new(
                    EvidenceSource::Static,
                    config_evidence.clone(),
                )],
            ));
        }
        if fp.int_width.is_none() {
            let ilp64 = config.split_whitespace().any(|t| t == "USE64BITINT");
            fp.int_width = Some(Conclusion::new(
                if ilp64 {
                    IntWidth::Ilp64
                } else {
                    IntWidth::Lp64
                },
                Confidence::Medium,
                vec![Evidence::new(
                    EvidenceSource::Static,
                    if ilp64 {
                        "config has USE64BITINT".to_owned()
                    } else {
                        "config lacks USE64BITINT and exports have no 64 suffix".to_owned()
                    },
                )],
            ));
        }
    }
    let config_openmp = config.is_some_and(|c| c.split_whitespace().any(|t| t == "USE_OPENMP"));
    if let Some((rt, ev)) = openmp_dependency(info) {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Openmp,
            Confidence::High,
            vec![ev.clone()],
        ));
        fp.openmp_runtime = Some(Conclusion::new(rt, Confidence::High, vec![ev]));
        if config_openmp {
            if let Some(t) = &mut fp.threading_layer {
                t.evidence.push(Evidence::new(
                    EvidenceSource::Static,
                    "config has USE_OPENMP",
                ));
            }
        }
    } else if config_openmp {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Openmp,
            Confidence::High,
            vec![Evidence::new(
                EvidenceSource::Static,
                "config has USE_OPENMP",
            )],
        ));
    } else if let Some(imp) = THREAD_CREATE_IMPORTS
        .iter()
        .find(|s| info.imports_symbol(s))
    {
        let mut evidence = vec![
            Evidence::new(EvidenceSource::Static, format!("import {imp}")),
            Evidence::new(
                EvidenceSource::Static,
                "no OpenMP runtime among its dependencies",
            ),
        ];
        if info
            .marker_strings
            .iter()
            .any(|s| s.contains("blas_thread_init"))
        {
            evidence.push(Evidence::new(
                EvidenceSource::Static,
                "string \"OpenBLAS blas_thread_init: ...\" (its pthreads server)",
            ));
        }
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Pthreads,
            Confidence::High,
            evidence,
        ));
    } else {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Disabled,
            Confidence::Medium,
            vec![Evidence::new(
                EvidenceSource::Static,
                "no OpenMP runtime among its dependencies and no thread-creation import",
            )],
        ));
    }
    openblas_parallel_build(fp, info);
}

/// OpenBLAS's `openblas_get_parallel` returns a constant fixed at build
/// time: 0 for a build without threading (`USE_THREAD=0`, Debian's
/// `libopenblas0-serial`), 1 for its pthreads server, 2 for OpenMP. Its
/// config string cannot tell: `" SINGLE_THREADED"` and `" MAX_THREADS=%d"`
/// are both in every build, the choice is made at run time. Read from the
/// code, it settles the threading layer.
fn openblas_parallel_build(fp: &mut Fingerprint, info: &BinaryInfo) {
    let Some((name, value)) = info
        .constant_returns
        .iter()
        .find(|(n, _)| n.contains("openblas_get_parallel"))
    else {
        return;
    };
    let layer = match value {
        0 => ThreadingLayer::Disabled,
        1 => ThreadingLayer::Pthreads,
        2 => ThreadingLayer::Openmp,
        _ => return,
    };
    let what = match layer {
        ThreadingLayer::Disabled => "built without threading: no thread pool",
        ThreadingLayer::Pthreads => "built with its pthreads server",
        _ => "built with OpenMP",
    };
    let ev = Evidence::new(
        EvidenceSource::Static,
        format!("export {name} returns {value} ({what})"),
    );
    match &mut fp.threading_layer {
        Some(t) if t.value == layer => {
            t.confidence = Confidence::High;
            t.evidence.push(ev);
        }
        _ => fp.threading_layer = Some(Conclusion::new(layer, Confidence::High, vec![ev])),
    }
}

fn refine_opencv(fp: &mut Fingerprint, info: &BinaryInfo) {
    for s in &info.marker_strings {
        if let Some(rest) = s.strip_prefix("General configuration for OpenCV ") {
            if let Some(v) = rest.split_whitespace().next() {
                fp.version = Some(Conclusion::new(
                    v.to_owned(),
                    Confidence::High,
                    vec![Evidence::new(
                        EvidenceSource::Static,
                        format!("build information \"{s}\""),
                    )],
                ));
            }
        }
        if let Some(rest) = s.strip_prefix("Parallel framework:") {
            let framework = rest.trim().to_owned();
            let ev = Evidence::new(EvidenceSource::Static, format!("build information \"{s}\""));
            let first = framework
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let layer = match first.as_str() {
                "pthreads" => Some(ThreadingLayer::Pthreads),
                "openmp" => Some(ThreadingLayer::Openmp),
                "tbb" => Some(ThreadingLayer::Tbb),
                "gcd" => Some(ThreadingLayer::Gcd),
                "concurrency" => Some(ThreadingLayer::Concurrency),
                "none" => Some(ThreadingLayer::Disabled),
                _ => None,
            };
            if let Some(layer) = layer {
                fp.threading_layer =
                    Some(Conclusion::new(layer, Confidence::High, vec![ev.clone()]));
            }
            if !framework.is_empty() {
                fp.parallel_framework =
                    Some(Conclusion::new(framework, Confidence::High, vec![ev]));
            }
        }
    }
    if let Some((rt, ev)) = openmp_dependency(info) {
        fp.openmp_runtime = Some(Conclusion::new(rt, Confidence::High, vec![ev]));
    }
}

fn refine_mkl(fp: &mut Fingerprint, base: &str, info: &BinaryInfo) {
    let lower = base.to_ascii_lowercase();
    let by_name = [
        ("intel_thread", ThreadingLayer::Intel),
        ("gnu_thread", ThreadingLayer::Gnu),
        ("tbb_thread", ThreadingLayer::Tbb),
        ("sequential", ThreadingLayer::Sequential),
    ];
    if let Some((frag, layer)) = by_name.iter().find(|(f, _)| lower.contains(f)) {
        fp.threading_layer = Some(Conclusion::new(
            *layer,
            Confidence::High,
            vec![Evidence::new(
                EvidenceSource::FileName,
                format!("MKL layer library name contains {frag}"),
            )],
        ));
    } else if lower.contains("mkl_rt") {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::RuntimeSelected,
            Confidence::High,
            vec![Evidence::new(
                EvidenceSource::FileName,
                "mkl_rt picks its threading layer at run time from MKL_THREADING_LAYER (default INTEL)",
            )],
        ));
    }
    for s in &info.marker_strings {
        if let Some(idx) = s.find("Version ") {
            if let Some(v) = s[idx + 8..].split_whitespace().next() {
                fp.version = Some(Conclusion::new(
                    v.to_owned(),
                    Confidence::Medium,
                    vec![Evidence::new(
                        EvidenceSource::Static,
                        format!("string \"{s}\""),
                    )],
                ));
                break;
            }
        }
    }
}

fn refine_blis(fp: &mut Fingerprint, base: &str, info: &BinaryInfo) {
    if let Some((rt, ev)) = openmp_dependency(info) {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Openmp,
            Confidence::High,
            vec![ev.clone()],
        ));
        fp.openmp_runtime = Some(Conclusion::new(rt, Confidence::High, vec![ev]));
    } else if let Some(imp) = THREAD_CREATE_IMPORTS
        .iter()
        .find(|s| info.imports_symbol(s))
    {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Pthreads,
            Confidence::Medium,
            vec![Evidence::new(
                EvidenceSource::Static,
                format!("import {imp}; no OpenMP runtime among its dependencies"),
            )],
        ));
    } else {
        fp.threading_layer = Some(Conclusion::new(
            ThreadingLayer::Disabled,
            Confidence::Medium,
            vec![Evidence::new(
                EvidenceSource::Static,
                format!("{base}: no OpenMP runtime among its dependencies and no thread-creation import"),
            )],
        ));
    }
}

fn accelerate(path: &str) -> Fingerprint {
    let mut fp = base_fingerprint(
        Vendor::Accelerate,
        &[Api::Blas, Api::Lapack],
        Confidence::High,
        Evidence::new(EvidenceSource::Static, format!("links {path}")),
    );
    fp.threading_layer = Some(Conclusion::new(
        ThreadingLayer::Gcd,
        Confidence::Medium,
        vec![Evidence::new(
            EvidenceSource::Static,
            "Accelerate runs its threads on Grand Central Dispatch (libdispatch)",
        )],
    ));
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(exports: &[&str], needed: &[&str], imports: &[&str], markers: &[&str]) -> BinaryInfo {
        BinaryInfo {
            format: Some(BinaryFormat::Elf),
            exports: exports.iter().map(|s| s.to_string()).collect(),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            imports: imports.iter().map(|s| s.to_string()).collect(),
            marker_strings: markers.iter().map(|s| s.to_string()).collect(),
            ..BinaryInfo::default()
        }
    }

    #[test]
    fn scipy_openblas64_pthreads() {
        let fp = fingerprint(
            "libscipy_openblas64_-32a4b2a6.so",
            &info(
                &["scipy_openblas_get_config64_", "scipy_dgemm_64_"],
                &["libpthread.so.0", "libgfortran-040039e1-0352e75f.so.5.0.0"],
                &["pthread_create", "omp_in_parallel"],
                &["OpenBLAS 0.3.31.188.0  USE64BITINT DYNAMIC_ARCH NO_AFFINITY"],
            ),
        )
        .expect("fingerprint");
        assert_eq!(fp.vendor.value, Vendor::Openblas);
        assert_eq!(fp.symbol_prefix.as_deref(), Some("scipy_"));
        assert_eq!(fp.symbol_suffix.as_deref(), Some("64_"));
        assert_eq!(fp.int_width.map(|c| c.value), Some(IntWidth::Ilp64));
        assert_eq!(fp.version.map(|c| c.value).as_deref(), Some("0.3.31.188.0"));
        assert_eq!(
            fp.threading_layer.map(|c| c.value),
            Some(ThreadingLayer::Pthreads)
        );
    }

    #[test]
    fn openblas_openmp_from_needed_libgomp_not_from_error_text() {
        let fp = fingerprint(
            "libopenblasp-r0.3.21.so",
            &info(
                &["openblas_get_config"],
                &["libgomp.so.1"],
                &["GOMP_parallel"],
                &["OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY USE_OPENMP"],
            ),
        )
        .expect("fingerprint");
        assert_eq!(
            fp.threading_layer.map(|c| c.value),
            Some(ThreadingLayer::Openmp)
        );
        assert_eq!(fp.openmp_runtime.map(|c| c.value), Some(Vendor::GnuOpenmp));

        // An old pthreads build mentions "USE_OPENMP=1" in an error message.
        let fp = fingerprint(
            "libopenblasp-r0-59ffcd50.3.15.so",
            &info(
                &["openblas_get_config"],
                &["libpthread.so.0"],
                &["pthread_create"],
                &[
                    "OpenBLAS 0.3.15 DYNAMIC_ARCH NO_CH NO_AFFINITY",
                    "OpenBLAS Warning : Detect OpenMP Loop and this application may hang. Please rebuild the library with USE_OPENMP=1 option.",
                ],
            ),
        )
        .expect("fingerprint");
        assert_eq!(
            fp.threading_layer.map(|c| c.value),
            Some(ThreadingLayer::Pthreads)
        );
        assert_eq!(fp.version.map(|c| c.value).as_deref(), Some("0.3.15"));
    }

    #[test]
    fn openmp_runtimes_by_name_and_exports() {
        let fp = fingerprint(
            "libgomp-e985bcbb.so.1.0.0",
            &info(&["omp_get_max_threads", "GOMP_parallel"], &[], &[], &[]),
        )
        .expect("fp");
        assert_eq!(fp.vendor.value, Vendor::GnuOpenmp);
        assert_eq!(fp.vendor.confidence, Confidence::High);
        let fp = fingerprint("vcomp140.dll", &BinaryInfo::default()).expect("fp");
        assert_eq!(fp.vendor.value, Vendor::MsvcOpenmp);
        assert_eq!(fp.vendor.confidence, Confidence::Medium);
        let fp = fingerprint(
            "libfoo.so",
            &info(&["omp_get_max_threads", "__kmpc_fork_call"], &[], &[], &[]),
        )
        .expect("fp");
        assert_eq!(fp.vendor.value, Vendor::LlvmOpenmp);
    }

    fn gomp(defs: &[&str]) -> BinaryInfo {
        BinaryInfo {
            exports: vec!["omp_get_max_threads".into(), "GOMP_parallel".into()],
            version_defs: defs.iter().map(|s| s.to_string()).collect(),
            ..info(&[], &[], &[], &[])
        }
    }

    #[test]
    fn gcc_release_from_comment_notes_and_debuglink() {
        assert_eq!(
            gcc_from_comment("GCC: (GNU) 10.2.1 20210130 (Red Hat 10.2.1-11)"),
            Some("10.2.1")
        );
        assert_eq!(
            gcc_from_comment("GCC: (Debian 12.2.0-14) 12.2.0"),
            Some("12.2.0")
        );
        assert_eq!(
            gcc_from_comment("GCC: (conda-forge gcc 14.2.0-1 (patched)) 14.2.0"),
            Some("14.2.0")
        );
        assert_eq!(gcc_from_comment("GCC: (GNU"), None);
        assert_eq!(gcc_from_comment("clang version 17.0.6"), None);
        assert_eq!(gcc_from_note("running gcc 8.5.0 20210514"), Some("8.5.0"));
        assert_eq!(gcc_from_note("annobin gcc 8.5.0 20210514"), None);
        assert_eq!(
            package_from_debuglink("libgomp.so.1.0.0-8.5.0-28.el8_10.alma.1.x86_64.debug"),
            Some(("8.5.0", "28.el8_10.alma.1.x86_64"))
        );
        assert_eq!(
            package_from_debuglink("56f0954e1931eebc020ca4a4e6bef40f4f7765.debug"),
            None
        );
        assert_eq!(package_from_debuglink("libgomp.so.1.0.0-x-1.debug"), None);
    }

    #[test]
    fn libgomp_version_exact_when_recorded_else_a_lower_bound() {
        // .comment wins; the highest GCC among several lines (crt objects
        // may come from an older compiler).
        let mut i = gomp(&["OMP_1.0", "GOMP_4.0", "GOMP_5.0"]);
        i.comment = vec![
            "GCC: (GNU) 4.8.5 20150623 (Red Hat 4.8.5-44)".into(),
            "GCC: (GNU) 10.2.1 20210130 (Red Hat 10.2.1-11)".into(),
        ];
        let fp = fingerprint("libgomp-a34b3233.so.1.0.0", &i).expect("fp");
        let v = fp.version.expect("version");
        assert_eq!(v.value, "10.2.1");
        assert_eq!(v.confidence, Confidence::High);
        assert!(v.evidence[0].detail.contains(".comment"), "{v:?}");

        // Only the nodes: a lower bound, the API node named on a tie.
        let fp = fingerprint(
            "libgomp.so.1",
            &gomp(&["OMP_1.0", "GOMP_5.1", "OMP_5.1", "GOACC_2.0.2", "OMP_5.0.2"]),
        )
        .expect("fp");
        let v = fp.version.expect("version");
        assert_eq!(v.value, ">=12");
        assert_eq!(v.confidence, Confidence::Low);
        assert!(v.evidence[0].detail.contains("OMP_5.1"), "{v:?}");

        // Nodes newer than the recorded compiler: shown, confidence drops.
        let mut i = gomp(&["OMP_5.0", "GOMP_5.0"]);
        i.build_notes = vec!["running gcc 8.5.0 20210514".into()];
        let v = fingerprint("libgomp.so.1", &i)
            .and_then(|f| f.version)
            .expect("version");
        assert_eq!(v.value, "8.5.0");
        assert_eq!(v.confidence, Confidence::Medium);
        assert!(v
            .evidence
            .iter()
            .any(|e| e.detail.contains("newer than GCC 8.5.0")));

        // Only the package-named debug link: medium.
        let mut i = gomp(&["OMP_4.5"]);
        i.debuglink = Some("libgomp.so.1.0.0-11.4.1-3.el9.x86_64.debug".into());
        let v = fingerprint("libgomp.so.1", &i)
            .and_then(|f| f.version)
            .expect("version");
        assert_eq!(
            (v.value.as_str(), v.confidence),
            ("11.4.1", Confidence::Medium)
        );

        // Nothing at all: no version. A GCC .comment in a non-GNU runtime
        // is not its version.
        assert_eq!(
            fingerprint("libgomp.so.1", &gomp(&[])).and_then(|f| f.version),
            None
        );
        let mut i = info(&["omp_get_max_threads", "kmp_set_defaults"], &[], &[], &[]);
        i.comment = vec!["GCC: (GNU) 8.5.0 20210514 (Red Hat 8.5.0-20)".into()];
        let fp = fingerprint("libiomp5.so", &i).expect("fp");
        assert_eq!(fp.vendor.value, Vendor::IntelOpenmp);
        assert_eq!(fp.version, None);
    }

    #[test]
    fn intel_msvc_openmp_and_tbb_versions() {
        let i = info(
            &["omp_get_max_threads", "kmp_set_defaults"],
            &[],
            &[],
            &["Intel(R) OMP version: 5.0.20260828"],
        );
        let fp = fingerprint("libiomp5.so", &i).expect("fp");
        assert_eq!(fp.version.map(|v| v.value).as_deref(), Some("5.0.20260828"));
        let i = BinaryInfo {
            format: Some(BinaryFormat::Pe),
            file_version: Some("14.51.36247.0".into()),
            ..BinaryInfo::default()
        };
        let fp = fingerprint("vcomp140.dll", &i).expect("fp");
        assert_eq!(
            fp.version.map(|v| v.value).as_deref(),
            Some("14.51.36247.0")
        );
        let i = info(
            &["TBB_runtime_interface_version"],
            &[],
            &[],
            &["TBB: VERSION\t\t2021.8.0"],
        );
        let fp = fingerprint("libtbb.so.12", &i).expect("fp");
        assert_eq!(fp.vendor.value, Vendor::Tbb);
        assert_eq!(fp.version.map(|v| v.value).as_deref(), Some("2021.8.0"));
        // LLVM's libomp records no release.
        let i = info(
            &["omp_get_max_threads", "kmp_set_defaults"],
            &[],
            &[],
            &["LLVM OMP version: 5.0.20140926"],
        );
        assert_eq!(
            fingerprint("libomp.dylib", &i).and_then(|f| f.version),
            None
        );
    }

    #[test]
    fn accelerate_from_install_path() {
        let fp = fingerprint(
            "/System/Library/Frameworks/Accelerate.framework/Versions/A/Accelerate",
            &BinaryInfo::default(),
        )
        .expect("fp");
        assert_eq!(fp.vendor.value, Vendor::Accelerate);
    }

    #[test]
    fn blas_shim_forwards_to_openblas() {
        let fp = fingerprint(
            "libblas.so.3",
            &info(
                &["dgemm_", "cblas_dgemm"],
                &["libopenblas.so.0", "libgomp.so.1"],
                &[],
                &[],
            ),
        )
        .expect("fp");
        assert_eq!(fp.vendor.value, Vendor::Unknown);
        assert_eq!(fp.forwards_to.as_deref(), Some("libopenblas.so.0"));
    }

    #[test]
    fn opencv_framework_from_build_information() {
        let fp = fingerprint(
            "cv2.abi3.so",
            &info(
                &["PyInit_cv2"],
                &[],
                &[],
                &[
                    "Parallel framework:            pthreads",
                    "General configuration for OpenCV 5.0.0 =====",
                ],
            ),
        )
        .expect("fp");
        assert_eq!(fp.vendor.value, Vendor::Opencv);
        assert_eq!(
            fp.parallel_framework.map(|c| c.value).as_deref(),
            Some("pthreads")
        );
        assert_eq!(fp.version.map(|c| c.value).as_deref(), Some("5.0.0"));
    }

    #[test]
    fn unrelated_library_is_none() {
        assert!(fingerprint("libz.so.1", &info(&["inflate"], &[], &[], &[])).is_none());
    }
}
