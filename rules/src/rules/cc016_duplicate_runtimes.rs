//! CC016: several copies of one runtime.

use caiclust_probe::{Evidence, EvidenceSource, Vendor};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::{env_evidence, finding};

const EXPLANATION: &str = r#"## What it detects
One runtime present in several copies (numpy's, scipy's and OpenCV's own
OpenBLAS; the system libgomp and a wheel's hash-renamed libgomp), while
the thread variable that limits every copy is unset.

## Why it is bad
Each copy has its own thread pool: oversubscription multiplies, and a
runtime call (threadpoolctl, `cv2.setNumThreads`) limits only one copy.

## Example
PyPI numpy + scipy + opencv-python-headless load three OpenBLAS (0.3.31,
0.3.30, 0.3.15).

## Fix
Set the thread variables before the interpreter starts: they reach every
copy.

## References
HAZARDS H20 (verified)."#;

/// Several copies of one runtime.
pub struct DuplicateRuntimes;

static INFO: RuleInfo = RuleInfo {
    id: "CC016",
    name: "duplicate-runtimes",
    category: Category::Note,
    summary: "one runtime is present in several copies, each with its own thread pool",
    explanation: EXPLANATION,
    hazards: &["H20"],
};

fn limiting_variable(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Openblas => "OPENBLAS_NUM_THREADS",
        Vendor::Mkl => "MKL_NUM_THREADS",
        Vendor::Blis => "BLIS_NUM_THREADS",
        Vendor::Opencv => "OPENCV_FOR_THREADS_NUM",
        _ => "OMP_NUM_THREADS",
    }
}

impl Rule for DuplicateRuntimes {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        for dup in &cx.facts.duplicates {
            let var = limiting_variable(dup.vendor);
            if cx.env(var).is_some() {
                continue;
            }
            let mut ev: Vec<Evidence> = dup
                .paths
                .iter()
                .map(|p| Evidence::new(EvidenceSource::Static, format!("copy {}", p.display())))
                .collect();
            ev.push(env_evidence(cx.facts, var));
            let names: Vec<String> = dup.paths.iter().map(|p| p.display().to_string()).collect();
            out.push(finding(
                &INFO,
                format!(
                    "{} copies of {:?}, each with its own pool: {}",
                    dup.paths.len(),
                    dup.vendor,
                    names.join(", ")
                ),
                ev,
                format!("set {var} before the interpreter starts: it limits every copy"),
                names.first().cloned().unwrap_or_default(),
            ));
        }
        out
    }
}
