//! CC015, CUDA with fork (issue #14, point 5 for PyTorch), on the facts of
//! a real PyPI torch venv (`snapshots/linux-torch-fork`: its bundled GNU
//! OpenMP and the NVIDIA runtime wheels it requires). The level follows
//! what the script runs: CUDA initialised in the parent before the fork is
//! an error; CPU-only PyTorch across the fork is CC001's (measured in
//! VERDICTS.md: it hangs), and CC015 only warns; without a script both
//! are presumed.

mod common;

use std::path::Path;

use caiclust_probe::Facts;
use caiclust_rules::{assess, evaluate, script_plan, Config, Level, Plan};

fn torch_facts() -> Facts {
    common::scenarios()
        .into_iter()
        .find(|(name, _, _)| name == "linux-torch-fork")
        .map(|(_, facts, _)| facts)
        .expect("the linux-torch-fork snapshot")
}

/// A fork plan for this script's usage (`None`: no script read).
fn plan(script: Option<&str>) -> Plan {
    Plan {
        start_method: Some("fork".into()),
        workers: Some(2),
        usage: script.map(|text| {
            script_plan(Path::new("pipeline.py"), text)
                .unwrap_or_else(|e| panic!("{e}"))
                .usage
        }),
        ..Plan::default()
    }
}

/// CC015's (level, presumed).
fn cc015(p: &Plan) -> (Level, bool) {
    let report = evaluate(&torch_facts(), p, &Config::default());
    let f = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC015")
        .unwrap_or_else(|| panic!("no CC015: {:#?}", report.findings));
    (f.level, f.presumed)
}

const TAIL: &str = "
def task(seed):
    x = torch.rand(400, 400)
    return float((x @ x).sum())

if __name__ == '__main__':
    PARENT
    with multiprocessing.get_context('fork').Pool(2) as pool:
        print(pool.map(task, range(4)))
";

fn script(parent: &str) -> String {
    format!(
        "import multiprocessing\nimport torch\n{}",
        TAIL.replace("PARENT", parent)
    )
}

#[test]
fn cuda_initialised_before_the_fork_is_an_error() {
    for parent in [
        "torch.cuda.init()",
        "print(torch.cuda.is_available())",
        "model = torch.nn.Linear(3, 3).cuda()",
        "x = torch.zeros(3).to('cuda')",
        "x = torch.zeros(3, device='cuda:0')",
    ] {
        let p = plan(Some(&script(parent)));
        assert_eq!(cc015(&p), (Level::Error, false), "{parent}");
        let v = assess(&torch_facts(), &p, &Config::default());
        assert!(
            v.start_method_hazards.contains(&"CC015".to_string()),
            "{parent}: {v:?}"
        );
    }
    // CuPy: any call initialises CUDA.
    let cupy = "import multiprocessing\nimport cupy\nx = cupy.zeros(3)\n\
                if __name__ == '__main__':\n    multiprocessing.get_context('fork').Pool(2).map(abs, [1])\n";
    assert_eq!(cc015(&plan(Some(cupy))), (Level::Error, false));
}

#[test]
fn cpu_only_torch_across_the_fork_is_cc001s_hang_not_cc015s() {
    // torch_parent_and_workers.py in VERDICTS.md: hangs under fork.
    let p = plan(Some(&script("print(task(0))")));
    assert_eq!(cc015(&p), (Level::Warning, false));
    let v = assess(&torch_facts(), &p, &Config::default());
    assert_eq!(v.start_method_hazards, ["CC001"], "{v:?}");
    // torch_workers_only.py: completes under fork; nothing stops it.
    let p = plan(Some(&script("print(torch.__version__)")));
    assert_eq!(cc015(&p), (Level::Warning, false));
    let v = assess(&torch_facts(), &p, &Config::default());
    assert!(v.start_method_hazards.is_empty(), "{v:?}");
    // A CUDA call after the fork (in the parent) initialises nothing the
    // workers inherit.
    let after = script("pass").replace(
        "        print(pool.map(task, range(4)))",
        "        print(pool.map(task, range(4)))\n    torch.cuda.init()",
    );
    assert_eq!(cc015(&plan(Some(&after))), (Level::Warning, false));
}

#[test]
fn without_a_script_the_policy_presumes_it() {
    let p = plan(None);
    assert_eq!(cc015(&p), (Level::Warning, true));
    let v = assess(&torch_facts(), &p, &Config::default());
    assert!(
        v.start_method_hazards.contains(&"CC015".to_string()),
        "{v:?}"
    );
    assert!(v.only_presumed(), "{v:?}");
}
