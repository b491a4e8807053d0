//! CC008: OpenBLAS OpenMP build limited only by OPENBLAS_NUM_THREADS.

use caiclust_probe::Vendor;

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_evidence, finding, library_evidence, runtime_libraries};

const EXPLANATION: &str = r#"## What it detects
An OpenMP build of OpenBLAS (Debian `libopenblas0-openmp`, conda's
`openblas` with OpenMP) with `OPENBLAS_NUM_THREADS` (or `GOTO_NUM_THREADS`)
set but `OMP_NUM_THREADS` unset.

## Why it is bad
OpenMP builds of OpenBLAS ignore `OPENBLAS_NUM_THREADS`: only
`OMP_NUM_THREADS` sizes their pool. The limit everyone believes in does
nothing, the pool uses every CPU (oversubscription), and after fork it hangs.

## Example
`OPENBLAS_NUM_THREADS=1 python run.py` with Debian numpy and the
`libopenblas0-openmp` alternative.

## Fix
Always set `OMP_NUM_THREADS` too.

## References
OpenBLAS `driver/others/memory.c`; HAZARDS H08."#;

/// OpenBLAS OpenMP build limited only by OPENBLAS_NUM_THREADS.
pub struct OpenblasOpenmpThreadVariable;

static INFO: RuleInfo = RuleInfo {
    id: "CC008",
    name: "openblas-openmp-thread-variable",
    category: Category::Ineffective,
    summary:
        "OPENBLAS_NUM_THREADS is set but the OpenMP build of OpenBLAS reads only OMP_NUM_THREADS",
    explanation: EXPLANATION,
    hazards: &["H08"],
};

impl Rule for OpenblasOpenmpThreadVariable {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if cx.env("OMP_NUM_THREADS").is_some() {
            return Vec::new();
        }
        let Some(var) = ["OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"]
            .into_iter()
            .find(|v| cx.env(v).is_some())
        else {
            return Vec::new();
        };
        runtime_libraries(cx.facts)
            .filter(|l| l.vendor.value == Vendor::Openblas && l.openmp_runtime.is_some())
            .map(|lib| {
                let mut ev = library_evidence(lib);
                if let Some(r) = &lib.openmp_runtime {
                    ev.extend(r.evidence.iter().cloned());
                }
                ev.push(env_evidence(cx.facts, var));
                ev.push(env_evidence(cx.facts, "OMP_NUM_THREADS"));
                finding(
                    &INFO,
                    format!(
                        "{var}={} has no effect on {}, an OpenMP build of OpenBLAS: only OMP_NUM_THREADS limits it",
                        cx.env(var).unwrap_or_default(),
                        lib.path.display()
                    ),
                    ev,
                    format!("also set OMP_NUM_THREADS={}", cx.env(var).unwrap_or("1")),
                    var,
                )
            })
            .collect()
    }
}
