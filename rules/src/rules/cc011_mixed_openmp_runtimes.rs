//! CC011: several OpenMP runtimes, or MKL's Intel layer with libgomp.

use caiclust_probe::{ThreadingLayer, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_evidence, finding, library_evidence, runtime_libraries};

const EXPLANATION: &str = r#"## What it detects
Two different OpenMP runtimes in one environment or process (GNU libgomp,
LLVM libomp, Intel libiomp5, MSVC vcomp), or MKL running its Intel
threading layer (the default of `mkl_rt`) next to GNU libgomp.

## Why it is bad
Two OpenMP runtimes in one process fight over threads: Intel and LLVM abort
with `OMP: Error #15: Initializing libiomp5.dylib, but found libomp.dylib
already initialized`; other pairs crash, deadlock or ignore each other's
limits.

## Example
conda MKL numpy (libiomp5) with PyPI scikit-learn (libgomp) on Linux, or
PyTorch (libiomp5) with scikit-learn (libomp) on macOS.

Two runtimes the loader knows by one name (an LLVM libomp installed as
`libgomp.so.1` and GNU's `libgomp.so.1`) are alternatives: one process
maps only one of them, so they are not reported.

## Fix
One runtime: install packages from one channel; with MKL and libgomp set
`MKL_THREADING_LAYER=GNU`. `KMP_DUPLICATE_LIB_OK=TRUE` only as a last resort.

## References
threadpoolctl `multiple_openmp.md`; pytorch #37377; HAZARDS H11."#;

/// Mixed OpenMP runtimes.
pub struct MixedOpenmpRuntimes;

static INFO: RuleInfo = RuleInfo {
    id: "CC011",
    name: "mixed-openmp-runtimes",
    category: Category::HangOrCrash,
    summary: "two OpenMP runtimes (or MKL's Intel layer with libgomp) in one process",
    explanation: EXPLANATION,
    hazards: &["H11"],
    depends_on_start_method: false,
};

impl Rule for MixedOpenmpRuntimes {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let facts = cx.facts;
        let mut out = Vec::new();
        let omp: Vec<_> = runtime_libraries(facts)
            .filter(|l| l.vendor.value.is_openmp())
            .collect();
        let mut vendors: Vec<Vendor> = omp.iter().map(|l| l.vendor.value).collect();
        vendors.sort();
        vendors.dedup();
        if vendors.len() > 1 {
            // Report at the first library of each vendor after the first,
            // paired with a copy of the first vendor it can coexist with:
            // copies the loader knows by one name (conda's `libgomp.so.1`
            // that is LLVM's libomp, and the system's GNU one) are
            // alternatives, never both mapped.
            let first = vendors[0];
            for lib in omp.iter().filter(|l| l.vendor.value != first) {
                let Some(other) = omp
                    .iter()
                    .find(|l| l.vendor.value == first && !l.is_alternative_to(lib))
                else {
                    continue;
                };
                let mut ev = library_evidence(lib);
                ev.extend(library_evidence(other));
                out.push(finding(
                    &INFO,
                    format!(
                        "two OpenMP runtimes: {} ({}) and {} ({})",
                        lib.path.display(),
                        lib.vendor.value,
                        other.path.display(),
                        other.vendor.value
                    ),
                    ev,
                    "install packages that share one OpenMP runtime (one channel)",
                    lib.path.display().to_string(),
                ));
            }
        }
        let gomp = omp.iter().find(|l| l.vendor.value == Vendor::GnuOpenmp);
        let layer_env = cx.env("MKL_THREADING_LAYER").map(str::to_ascii_uppercase);
        if let Some(gomp) = gomp {
            for mkl in runtime_libraries(facts).filter(|l| l.vendor.value == Vendor::Mkl) {
                let layer = mkl.threading_layer.as_ref().map(|t| t.value);
                let intel = match layer {
                    Some(ThreadingLayer::Intel) => true,
                    Some(ThreadingLayer::RuntimeSelected) => {
                        matches!(layer_env.as_deref(), None | Some("INTEL") | Some(""))
                    }
                    _ => false,
                };
                // The Intel layer file next to mkl_rt is only loaded when
                // mkl_rt selects it; report mkl_rt itself then.
                let has_rt = runtime_libraries(facts).any(|l| {
                    l.vendor.value == Vendor::Mkl
                        && l.threading_layer.as_ref().map(|t| t.value)
                            == Some(ThreadingLayer::RuntimeSelected)
                });
                if !intel || (layer == Some(ThreadingLayer::Intel) && has_rt) {
                    continue;
                }
                let mut ev = library_evidence(mkl);
                if let Some(t) = &mkl.threading_layer {
                    ev.extend(t.evidence.iter().cloned());
                }
                ev.push(env_evidence(facts, "MKL_THREADING_LAYER"));
                ev.extend(library_evidence(gomp));
                out.push(finding(
                    &INFO,
                    format!(
                        "MKL {} runs its Intel OpenMP threading layer while GNU OpenMP {} is present",
                        mkl.path.display(),
                        gomp.path.display()
                    ),
                    ev,
                    "set MKL_THREADING_LAYER=GNU before the interpreter starts",
                    mkl.path.display().to_string(),
                ));
            }
        }
        out
    }
}
