//! CC003: Accelerate (vecLib) with fork on macOS.

use caiclust_probe::{OsFamily, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::recommend::EnvSetting;
use crate::registry::Rule;
use crate::rules::{env_count, env_evidence, finding, library_evidence, start_method_evidence};

const EXPLANATION: &str = r#"## What it detects
On macOS, a BLAS that is Apple's Accelerate/vecLib (numpy ≥ 2 wheels for
macOS 14, scipy's Accelerate wheels), and workers started with `fork`
(Python < 3.8, or forced with `set_start_method("fork")`).

## Why it is bad
Accelerate runs on Grand Central Dispatch, which does not survive fork:
workers crash inside libBLAS/libdispatch and the pool hangs.

## Example
numpy 2.x on macOS 14 arm64, `multiprocessing.set_start_method("fork")`,
then a matrix product in the workers.

## Fix
Use `spawn` (the macOS default since Python 3.8); or set
`VECLIB_MAXIMUM_THREADS=1` before the interpreter starts; or use an OpenBLAS
build of numpy.

## References
CaImAn #206, #130; numpy #5752; scikit-learn FAQ; HAZARDS H02."#;

/// Accelerate with fork on macOS: workers crash or hang.
pub struct AccelerateFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC003",
    name: "accelerate-fork",
    category: Category::HangOrCrash,
    summary: "Apple Accelerate (vecLib) is the BLAS and workers are forked: workers crash or hang",
    explanation: EXPLANATION,
    hazards: &["H02"],
    depends_on_start_method: true,
};

impl Rule for AccelerateFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if cx.facts.target_os != OsFamily::Macos
            || !cx.forks()
            || env_count(cx.facts, "VECLIB_MAXIMUM_THREADS") == Some(1)
        {
            return Vec::new();
        }
        cx.facts
            .libraries_of(Vendor::Accelerate)
            .map(|lib| {
                let mut ev = library_evidence(lib);
                ev.push(env_evidence(cx.facts, "VECLIB_MAXIMUM_THREADS"));
                ev.push(start_method_evidence(cx));
                let by = if lib.pulled_in_by.is_empty() {
                    String::new()
                } else {
                    format!(" (used by {})", lib.pulled_in_by.join(", "))
                };
                let mut f = finding(
                    &INFO,
                    format!("Accelerate {}{by} with fork on macOS: workers crash in libBLAS/libdispatch", lib.path.display()),
                    ev,
                    "use the spawn start method, or set VECLIB_MAXIMUM_THREADS=1 before the interpreter starts",
                    lib.path.display().to_string(),
                );
                f.env_fix = vec![EnvSetting {
                    name: "VECLIB_MAXIMUM_THREADS".into(),
                    value: "1".into(),
                    reason: "Accelerate then runs on the calling thread, which survives fork".into(),
                    answers: vec![INFO.id.to_string()],
                }];
                f
            })
            .collect()
    }
}
