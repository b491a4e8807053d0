//! CC014: CaImAn on macOS forces forkserver.

use caiclust_probe::{Evidence, EvidenceSource, OsFamily};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::finding;

const EXPLANATION: &str = r#"## What it detects
CaImAn installed in an environment for macOS.

## Why it is bad
CaImAn's `setup_cluster` on macOS, inside an IPython kernel, calls
`multiprocessing.set_start_method("forkserver", force=True)`, overriding
the start method the user chose; workers then need importable task
functions and inherit the forkserver's environment.

## Example
`caiman.cluster.setup_cluster(backend="multiprocessing")` in Jupyter on a
Mac.

## Fix
Create the pool yourself with an explicit context, or set the start method
after `setup_cluster` knowing it was forced.

## References
CaImAn `cluster.py`; HAZARDS H14."#;

/// CaImAn on macOS.
pub struct CaimanMacosForkserver;

static INFO: RuleInfo = RuleInfo {
    id: "CC014",
    name: "caiman-macos-forkserver",
    category: Category::Note,
    summary: "CaImAn's setup_cluster forces forkserver on macOS inside IPython",
    explanation: EXPLANATION,
    hazards: &["H14"],
    depends_on_start_method: false,
};

impl Rule for CaimanMacosForkserver {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        if cx.facts.target_os != OsFamily::Macos {
            return Vec::new();
        }
        cx.facts
            .packages
            .iter()
            .filter(|p| p.name == "caiman")
            .map(|p| {
                finding(
                    &INFO,
                    format!(
                        "CaImAn at {} on macOS: setup_cluster in an IPython kernel forces the forkserver start method",
                        p.path.display()
                    ),
                    vec![Evidence::new(
                        EvidenceSource::FileName,
                        format!("package caiman {} at {}", p.version.as_deref().unwrap_or("?"), p.path.display()),
                    )],
                    "create the pool with an explicit multiprocessing context",
                    p.path.display().to_string(),
                )
            })
            .collect()
    }
}
