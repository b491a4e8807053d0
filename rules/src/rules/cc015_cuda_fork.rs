//! CC015: CUDA runtime with fork.

use caiclust_probe::{Api, Evidence, EvidenceSource, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, Level, RuleInfo};
use crate::registry::Rule;
use crate::rules::{finding, library_evidence, runtime_libraries, start_method_evidence};
use crate::uses::why_unknown;

const EXPLANATION: &str = r#"## What it detects
A CUDA runtime (used by TensorFlow, PyTorch, CuPy) in the environment, and
workers started with `fork`.

With scripts the level follows what they run, read statically: an error
where the parent initialises CUDA before the workers are forked (a CuPy
call, anything under a `cuda` attribute such as `torch.cuda.*`,
`numba.cuda.*` or `model.cuda()`, or a `"cuda…"` device such as
`x.to("cuda")`); a warning where no script does (the runtime is only
installed, as in every PyPI PyTorch wheel for Linux: CPU-only work forks
fine, measured). Without scripts it is a warning the hazard policy
presumes (`presumed` in the JSON): `caiclust run`, `caiclust map` and
`Cluster` avoid fork all the same.

## Why it is bad
A CUDA context does not survive fork: once the parent has initialised CUDA,
every CUDA call in a forked worker fails ("CUDA initialization error",
"Cannot re-initialize CUDA in forked subprocess").

## Example
`model.cuda()` or `torch.cuda.is_available()` in the parent, then a fork
`Pool` that runs a model.

## Fix
Use the spawn (or forkserver) start method.

## References
scikit-learn FAQ; PyTorch "multiprocessing best practices"; HAZARDS H19;
`tests/verdicts/torch_*.py` and VERDICTS.md (PyPI torch without a GPU:
no CUDA, no failure)."#;

/// CUDA with fork.
pub struct CudaFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC015",
    name: "cuda-fork",
    category: Category::HangOrCrash,
    summary: "a CUDA runtime is present and workers are forked: CUDA fails in workers",
    explanation: EXPLANATION,
    hazards: &["H19"],
    depends_on_start_method: true,
};

impl Rule for CudaFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if !cx.forks() {
            return Vec::new();
        }
        let usage = cx.plan.usage.as_ref();
        runtime_libraries(cx.facts)
            .filter(|l| l.vendor.value == Vendor::Cuda || l.apis.contains(&Api::Gpu))
            .map(|lib| {
                let mut ev = library_evidence(lib);
                ev.push(start_method_evidence(cx));
                let what = format!("CUDA runtime {} with fork", lib.path.display());
                let how = "a worker forked after the parent initialised CUDA cannot use it";
                let (level, presumed, message) = match usage {
                    Some(u) if u.cuda_before_fork => {
                        ev.push(Evidence::new(
                            EvidenceSource::SourceCode,
                            "the script initialises CUDA before the workers are forked",
                        ));
                        (
                            Level::Error,
                            false,
                            format!("{what}: the script initialises CUDA before the fork, and {how}"),
                        )
                    }
                    Some(u) if u.unread_code.is_empty() => (
                        Level::Warning,
                        false,
                        format!(
                            "{what}, but the scripts do not initialise CUDA before the fork (no CuPy, `cuda` attribute or \"cuda\" device seen): {how}"
                        ),
                    ),
                    _ => (
                        Level::Warning,
                        true,
                        format!("{what}; {}: {how}", why_unknown(usage)),
                    ),
                };
                let mut f = finding(
                    &INFO,
                    message,
                    ev,
                    "use the spawn or forkserver start method",
                    lib.path.display().to_string(),
                );
                f.level = level;
                f.presumed = presumed;
                f
            })
            .collect()
    }
}
