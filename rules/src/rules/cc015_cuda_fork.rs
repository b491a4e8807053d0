//! CC015: CUDA runtime with fork.

use caiclust_probe::{Api, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{finding, library_evidence, runtime_libraries, start_method_evidence};

const EXPLANATION: &str = r#"## What it detects
A CUDA runtime (used by TensorFlow, PyTorch, CuPy) in the environment, and
workers started with `fork`.

## Why it is bad
A CUDA context does not survive fork: once the parent has initialised CUDA,
every CUDA call in a forked worker fails ("CUDA initialization error",
"Cannot re-initialize CUDA in forked subprocess").

## Example
`torch.cuda.is_available()` in the parent, then a fork `Pool` that runs a
model.

## Fix
Use the spawn (or forkserver) start method.

## References
scikit-learn FAQ; PyTorch "multiprocessing best practices"; HAZARDS H19."#;

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
        runtime_libraries(cx.facts)
            .filter(|l| l.vendor.value == Vendor::Cuda || l.apis.contains(&Api::Gpu))
            .map(|lib| {
                let mut ev = library_evidence(lib);
                ev.push(start_method_evidence(cx));
                finding(
                    &INFO,
                    format!(
                        "CUDA runtime {} with fork: a worker forked after the parent initialised CUDA cannot use it",
                        lib.path.display()
                    ),
                    ev,
                    "use the spawn or forkserver start method",
                    lib.path.display().to_string(),
                )
            })
            .collect()
    }
}
