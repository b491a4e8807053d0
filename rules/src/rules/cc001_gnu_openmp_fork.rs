//! CC001: GNU OpenMP pools that will be forked.

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{file_name, finding, gnu_openmp_pools, library_evidence, start_method_evidence};

const EXPLANATION: &str = r#"## What it detects
A pool that runs on GNU OpenMP (`libgomp`) with more than one thread, in an
environment whose workers are started with `fork`: scikit-learn's bundled
`libgomp-*.so`, the OpenMP builds of OpenBLAS (Debian `libopenblas0-openmp`)
and BLIS, MKL's GNU threading layer.

## Why it is bad
libgomp's thread pool does not survive `fork`: the child inherits the
bookkeeping of worker threads that no longer exist, and its first OpenMP
region waits for them forever (GCC bug 60035). The pool hangs with no error.
LLVM `libomp`, Intel `libiomp5` and pthreads builds of OpenBLAS survive
fork; a libgomp pool limited to one thread never starts worker threads and
does not hang.

## Example
PyPI scikit-learn on Linux (Python < 3.14): the parent runs `KMeans`, then
`multiprocessing.Pool()` (fork) runs `KMeans` in workers: they hang.

## Fix
Start workers with `spawn` or `forkserver`, or set `OMP_NUM_THREADS=1`
before the interpreter starts (not in `os.environ` after import), or use a
pthreads build of the BLAS.

## References
GCC bug 60035; OpenBLAS #294, #240; HAZARDS H01."#;

/// GNU OpenMP pools that will be forked.
pub struct GnuOpenmpFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC001",
    name: "gnu-openmp-fork",
    category: Category::HangOrCrash,
    summary: "a GNU OpenMP (libgomp) pool with more than one thread is forked: workers hang",
    explanation: EXPLANATION,
    hazards: &["H01"],
};

impl Rule for GnuOpenmpFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if !cx.forks() {
            return Vec::new();
        }
        gnu_openmp_pools(cx.facts)
            .into_iter()
            .filter(|p| p.threads > 1)
            .map(|p| {
                let mut ev = library_evidence(p.lib);
                if let Some(r) = &p.lib.openmp_runtime {
                    ev.extend(r.evidence.iter().cloned());
                }
                ev.extend(p.evidence);
                ev.push(start_method_evidence(cx));
                let what = if p.lib.vendor.value == caiclust_probe::Vendor::GnuOpenmp {
                    format!("GNU OpenMP {}", file_name(&p.lib.path))
                } else {
                    format!("{} (on GNU OpenMP libgomp)", file_name(&p.lib.path))
                };
                finding(
                    &INFO,
                    format!(
                        "{what} runs a pool of {} threads and workers are forked: the workers hang in libgomp",
                        p.threads
                    ),
                    ev,
                    "use the spawn or forkserver start method, or set OMP_NUM_THREADS=1 before the interpreter starts",
                    p.lib.path.display().to_string(),
                )
            })
            .collect()
    }
}
