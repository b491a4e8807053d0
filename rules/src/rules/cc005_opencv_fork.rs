//! CC005: OpenCV on an OpenMP or GCD framework with fork.

use caiclust_probe::{Evidence, EvidenceSource, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_count, env_evidence, finding, library_evidence, start_method_evidence};

const EXPLANATION: &str = r#"## What it detects
OpenCV (`cv2`) whose parallel framework is OpenMP or GCD, with more than
one thread (`OPENCV_FOR_THREADS_NUM` unset or > 1, and `cv2.getNumThreads()`
> 1 when known), and workers started with `fork`. pthreads builds (the PyPI
Linux wheels), TBB, Windows Concurrency and single-threaded builds are not
reported: a pthreads build was verified not to hang.

## Why it is bad
When OpenCV has used its OpenMP or GCD pool in the parent, cv2 calls in forked
workers can block forever. Reported, not reproduced here, hence a note.

## Example
An OpenCV built with OpenMP (conda, distribution packages) runs
`cv2.GaussianBlur` in the parent, then in the workers of a fork `Pool`.

## Fix
`cv2.setNumThreads(0)` before first use (CaImAn does this), or
`OPENCV_FOR_THREADS_NUM=1` before the interpreter starts, or spawn.

## References
opencv #5150, #11115; opencv-python #69, #249; HAZARDS H04."#;

/// OpenCV on OpenMP/GCD with fork.
pub struct OpencvFork;

static INFO: RuleInfo = RuleInfo {
    id: "CC005",
    name: "opencv-fork",
    category: Category::Note,
    summary: "OpenCV's OpenMP or GCD thread pool is forked: cv2 calls may block in workers",
    explanation: EXPLANATION,
    hazards: &["H04"],
    depends_on_start_method: true,
};

impl Rule for OpencvFork {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if !cx.forks() || env_count(cx.facts, "OPENCV_FOR_THREADS_NUM") == Some(1) {
            return Vec::new();
        }
        let cv2_threads = cx
            .facts
            .process
            .as_ref()
            .and_then(|p| p.python_runtime.as_ref())
            .and_then(|r| r.cv2_num_threads);
        if cv2_threads.is_some_and(|n| n <= 1) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for lib in cx.facts.libraries_of(Vendor::Opencv) {
            let Some(fw) = &lib.parallel_framework else {
                continue;
            };
            let name = fw.value.to_ascii_lowercase();
            if !(name.contains("openmp") || name.contains("gcd")) {
                continue;
            }
            let mut ev = library_evidence(lib);
            ev.extend(fw.evidence.iter().cloned());
            ev.push(env_evidence(cx.facts, "OPENCV_FOR_THREADS_NUM"));
            if let Some(n) = cv2_threads {
                ev.push(Evidence::new(
                    EvidenceSource::Runtime,
                    format!("cv2.getNumThreads() = {n}"),
                ));
            }
            ev.push(start_method_evidence(cx));
            out.push(finding(
                &INFO,
                format!(
                    "OpenCV {} uses the {} parallel framework and workers are forked: cv2 calls may block in the workers",
                    lib.path.display(),
                    fw.value
                ),
                ev,
                "call cv2.setNumThreads(0) before first use, or set OPENCV_FOR_THREADS_NUM=1, or use the spawn start method",
                lib.path.display().to_string(),
            ));
        }
        out
    }
}
