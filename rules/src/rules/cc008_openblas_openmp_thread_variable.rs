//! CC008: OpenBLAS OpenMP build limited only by OPENBLAS_NUM_THREADS.

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_evidence, finding, library_evidence, runtime_libraries};
use crate::threads::pool_sizing;

const EXPLANATION: &str = r#"## What it detects
An OpenMP build of OpenBLAS (Debian `libopenblas0-openmp`, conda's
`openblas` with OpenMP) with `OPENBLAS_NUM_THREADS` (or `GOTO_NUM_THREADS`)
set but `OMP_NUM_THREADS` unset; in general, any runtime whose pool is
limited only by a variable that its build ignores (the table of which
variable sizes which runtime is `rules/src/threads.rs`).

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
    depends_on_start_method: false,
};

impl Rule for OpenblasOpenmpThreadVariable {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        for lib in runtime_libraries(cx.facts) {
            let Some(sizing) = pool_sizing(lib) else {
                continue;
            };
            // Only when nothing the runtime reads is set: then the
            // variable it ignores is the only limit there is.
            if sizing.sized_by.iter().any(|v| cx.env(v).is_some()) {
                continue;
            }
            let Some(var) = sizing.ignores.iter().find(|v| cx.env(v).is_some()) else {
                continue;
            };
            let value = cx.env(var).unwrap_or_default();
            let mut ev = library_evidence(lib);
            if let Some(r) = &lib.openmp_runtime {
                ev.extend(r.evidence.iter().cloned());
            }
            ev.push(env_evidence(cx.facts, var));
            for v in sizing.sized_by {
                ev.push(env_evidence(cx.facts, v));
            }
            out.push(finding(
                &INFO,
                format!(
                    "{var}={value} has no effect on {}, {}: only {} limits it",
                    lib.path.display(),
                    sizing.runtime,
                    sizing.sized_by.join(" or ")
                ),
                ev,
                format!(
                    "also set {}={}",
                    sizing.limit_variable(),
                    if value.is_empty() { "1" } else { value }
                ),
                *var,
            ));
        }
        out
    }
}
