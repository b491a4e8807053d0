//! CC009: thread variables that the real process does not have.

use caiclust_probe::{Evidence, EvidenceSource};

use crate::context::Context;
use crate::finding::{Category, Finding, RuleInfo};
use crate::registry::Rule;
use crate::rules::finding;

const EXPLANATION: &str = r#"## What it detects
* For a probed process: a thread variable (`OMP_NUM_THREADS`, ...) that the
  probe's environment has but the process did not start with (its
  `/proc/PID/environ`), or started with a different value.
* For an environment: `CONDA_PREFIX` names another prefix than the
  interpreter's (`sys.prefix`) of a conda environment: the environment was
  never activated, so its activation scripts (which set the thread
  variables for CaImAn) did not run.

The other rules judge a probed process by the environment it started with,
the one its runtimes read: a value reported here protects nothing there.

## Why it is bad
Runtimes read these variables once, when they initialise. Variables set in
`os.environ` after `import numpy`, or set by an activation that never
happened (an IDE or a Jupyter kernel running the env's python directly),
protect nothing.

## Example
A kernel started as `/opt/conda/envs/caiman/bin/python` while
`CONDA_PREFIX=/opt/conda`.

## Fix
Set the variables before the interpreter starts: a wrapper script, the
kernel's `env` in `kernel.json`, or `caiclust run`.

## References
conda-forge caiman feedstock `activate.sh`/`activate.bat`; HAZARDS H09."#;

/// Thread variables missing in the real process.
pub struct ThreadEnvNotApplied;

static INFO: RuleInfo = RuleInfo {
    id: "CC009",
    name: "thread-env-not-applied",
    category: Category::Ineffective,
    summary: "thread variables believed set are missing from the process's real environment",
    explanation: EXPLANATION,
    hazards: &["H09"],
    depends_on_start_method: false,
};

fn is_thread_var(name: &str) -> bool {
    name.ends_with("_NUM_THREADS")
        || name.ends_with("_MAX_THREADS")
        || name == "VECLIB_MAXIMUM_THREADS"
        || name == "MKL_THREADING_LAYER"
        || name == "NUMBA_THREADING_LAYER"
        || name == "OPENCV_FOR_THREADS_NUM"
}

impl Rule for ThreadEnvNotApplied {
    fn info(&self) -> &'static RuleInfo {
        &INFO
    }

    fn check(&self, cx: &Context<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        if let Some(p) = &cx.facts.process {
            for (name, value) in cx.facts.env.iter().filter(|(n, _)| is_thread_var(n)) {
                let initial = p.initial_env.get(name);
                if initial == Some(value) {
                    continue;
                }
                let seen = match initial {
                    Some(v) => format!("started with {name}={v}"),
                    None => format!("started without {name}"),
                };
                out.push(finding(
                    &INFO,
                    format!("{name}={value} is expected, but process {} {seen}: its runtimes never saw the value", p.pid),
                    vec![
                        Evidence::new(EvidenceSource::Environment, format!("{name}={value} in the probe's environment")),
                        Evidence::new(EvidenceSource::System, format!("/proc/{}/environ: {seen}", p.pid)),
                    ],
                    format!("set {name}={value} before the interpreter starts"),
                    name.clone(),
                ));
            }
        }
        if let (Some(py), Some(conda)) = (&cx.facts.python, cx.env("CONDA_PREFIX")) {
            if py.is_conda && std::path::Path::new(conda) != py.prefix {
                out.push(finding(
                    &INFO,
                    format!(
                        "CONDA_PREFIX={conda} but the interpreter's prefix is {}: that environment was not activated, so its activation scripts (thread variables) did not run",
                        py.prefix.display()
                    ),
                    vec![
                        Evidence::new(EvidenceSource::Environment, format!("CONDA_PREFIX={conda}")),
                        Evidence::new(EvidenceSource::Runtime, format!("sys.prefix = {}", py.prefix.display())),
                    ],
                    "activate the environment, or set the thread variables before the interpreter starts",
                    "CONDA_PREFIX",
                ));
            }
        }
        out
    }
}
