//! Snapshot tests of the rules over Facts documents (`snapshots/*.facts.json`,
//! made from real `caiclust probe --json` output with the few fields each
//! scenario needs edited). Each has a plan (`*.plan.json`) and the exact
//! set of (rule id, level, location) it must produce
//! (`*.expected.json`). `CAICLUST_BLESS=1 cargo test -p caiclust-rules
//! --test snapshots` rewrites the expected files; review the diff.

mod common;
use common::{scenarios, snapshot_dir};

use std::collections::BTreeSet;

use caiclust_probe::Facts;
use caiclust_rules::{all_rules, evaluate, Config, Finding, Level, Plan, SCRIPT_RULES};

/// A finding's row id: the rule id, and for `CC100` the advisory it
/// reports (`CC100 CCA-0003`), which its message names in brackets.
fn row_id(f: &Finding) -> String {
    if f.rule_id != "CC100" {
        return f.rule_id.clone();
    }
    let advisory = f
        .message
        .split_once(" [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("CC100 message names its advisory: {}", f.message));
    format!("CC100 {advisory}")
}

type Row = (String, String, String);

fn rows(findings: &[Finding]) -> Vec<Row> {
    let mut rows: Vec<Row> = findings
        .iter()
        .map(|f| {
            (
                row_id(f),
                f.level.as_str().to_string(),
                f.location.clone().unwrap_or_default(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn every_snapshot_gives_exactly_its_expected_findings() {
    let bless = std::env::var_os("CAICLUST_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, facts, plan) in scenarios() {
        let report = evaluate(&facts, &plan, &Config::default());
        let got = rows(&report.findings);
        for f in &report.findings {
            assert!(
                !f.evidence.is_empty(),
                "{name}: {} has no evidence",
                f.rule_id
            );
            assert!(
                f.fix.is_some() && f.location.is_some(),
                "{name}: {} lacks fix/location",
                f.rule_id
            );
            assert!(
                !f.message.is_empty(),
                "{name}: {} has no message",
                f.rule_id
            );
        }
        let path = snapshot_dir().join(format!("{name}.expected.json"));
        if bless {
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let want: Vec<Row> = match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            Err(e) => panic!(
                "{}: {e} (run with CAICLUST_BLESS=1 and review)",
                path.display()
            ),
        };
        if got != want {
            failures.push(format!("{name}:\n  expected {want:?}\n  got      {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "snapshot mismatches:\n{}",
        failures.join("\n")
    );
}

/// Like rustc's error index: every rule has a scenario that triggers it.
/// The script rules ([`SCRIPT_RULES`]) read Python source, not facts: their
/// fixtures are proven in `script_lint.rs`.
#[test]
fn every_rule_is_triggered_by_some_snapshot() {
    let mut triggered = BTreeSet::new();
    for (_, facts, plan) in scenarios() {
        for f in evaluate(&facts, &plan, &Config::default()).findings {
            triggered.insert(f.rule_id);
        }
    }
    let missing: Vec<&str> = all_rules()
        .iter()
        .map(|r| r.info().id)
        .filter(|id| !triggered.contains(*id) && !SCRIPT_RULES.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "rules no snapshot triggers: {missing:?}"
    );
}

/// The "safe" scenarios give no error.
#[test]
fn safe_counterparts_give_no_error() {
    let safe = [
        "linux-pypi-fork-omp1",
        "linux-pypi-spawn",
        "linux-debian-openblas-openmp-omp1",
        "linux-debian-openblas-pthreads-fork",
        "linux-debian-blis-openmp-default",
        "linux-mkl-fork",
        "linux-mkl-gnu-layer-spawn",
        "linux-numba-workqueue-fork",
        "linux-cuda-spawn",
        "macos-accelerate-default",
        "macos-opencv-gcd-fork-limited",
        "windows-60-workers",
        "windows-numpy",
    ];
    let all = scenarios();
    for name in safe {
        let (_, facts, plan) = all
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no scenario {name}"));
        let report = evaluate(facts, plan, &Config::default());
        let errors: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

/// Each built-in advisory fires on an affected version and not on the
/// release that fixed it (nor where its threading layer or OS rules it out).
#[test]
fn advisories_fire_on_affected_versions_only() {
    // (advisory, scenarios it must fire on, scenarios it must not fire on)
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "CCA-0002",
            &["advisory-openblas-0.3.3-pthreads"],
            &["advisory-openblas-0.3.4-pthreads"],
        ),
        (
            "CCA-0003",
            &[
                "advisory-openblas-0.3.3-pthreads",
                "advisory-openblas-0.3.17-pthreads",
                "linux-pypi-fork",
            ],
            &[
                "advisory-openblas-0.3.18-pthreads",
                "linux-debian-openblas-pthreads-fork",
            ],
        ),
        (
            "CCA-0004",
            &["advisory-openblas-0.3.12-openmp"],
            &[
                "advisory-openblas-0.3.13-openmp",
                "advisory-openblas-0.3.12-pthreads",
            ],
        ),
        (
            "CCA-0005",
            &["advisory-openblas-0.3.26-windows"],
            &[
                "advisory-openblas-0.3.27-windows",
                "advisory-openblas-0.3.26-linux",
            ],
        ),
        (
            "CCA-0301",
            &["advisory-tbb-2021.8"],
            &["advisory-tbb-2021.9", "linux-numba-workqueue-fork"],
        ),
    ];
    let all = scenarios();
    let fired = |name: &str, id: &str| -> bool {
        let (_, facts, plan) = all
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no scenario {name}"));
        evaluate(facts, plan, &Config::default())
            .findings
            .iter()
            .any(|f| row_id(f) == format!("CC100 {id}"))
    };
    for (id, on, off) in cases {
        for name in *on {
            assert!(fired(name, id), "{id} should fire on {name}");
        }
        for name in *off {
            assert!(!fired(name, id), "{id} should not fire on {name}");
        }
    }
}

/// Ids and names are stable: a rename shows up in review here.
#[test]
fn rule_ids_and_names_are_stable_and_unique() {
    let listing: String = all_rules()
        .iter()
        .map(|r| {
            let i = r.info();
            format!(
                "{} {} {:?} {}\n",
                i.id,
                i.name,
                i.category,
                i.hazards.join(",")
            )
        })
        .collect();
    let path = snapshot_dir().join("rule-ids.txt");
    if std::env::var_os("CAICLUST_BLESS").is_some() {
        std::fs::write(&path, &listing).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        listing,
        "rule list changed"
    );
    let ids: BTreeSet<_> = all_rules().iter().map(|r| r.info().id).collect();
    let names: BTreeSet<_> = all_rules().iter().map(|r| r.info().name).collect();
    assert_eq!(ids.len(), all_rules().len(), "duplicate id");
    assert_eq!(names.len(), all_rules().len(), "duplicate name");
    let mut sorted: Vec<_> = all_rules().iter().map(|r| r.info().id).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        all_rules().iter().map(|r| r.info().id).collect::<Vec<_>>(),
        "not in id order"
    );
    for r in all_rules() {
        let i = r.info();
        assert!(
            i.name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{}",
            i.name
        );
        for section in [
            "## What it detects",
            "## Why it is bad",
            "## Example",
            "## Fix",
            "## References",
        ] {
            assert!(i.explanation.contains(section), "{} lacks {section}", i.id);
        }
    }
}

fn scenario(name: &str) -> (Facts, Plan) {
    scenarios()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, f, p)| (f, p))
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// MKL on its GNU layer and scikit-learn's libgomp, forked: one hazard, so
/// one CC001 finding carrying the evidence of both.
#[test]
fn mkl_gnu_layer_and_libgomp_are_one_finding() {
    let (facts, plan) = scenario("linux-mkl-gnu-layer-fork");
    let report = evaluate(&facts, &plan, &Config::default());
    let cc001: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.rule_id == "CC001")
        .collect();
    assert_eq!(cc001.len(), 1, "{cc001:#?}");
    let f = cc001[0];
    let details: Vec<&str> = f.evidence.iter().map(|e| e.detail.as_str()).collect();
    for needle in [
        "libmkl_gnu_thread.so.3",
        "libmkl_rt.so.3",
        "libgomp-e985bcbb.so.1.0.0",
        "MKL_THREADING_LAYER=GNU",
    ] {
        assert!(
            details.iter().any(|d| d.contains(needle)),
            "{needle}: {details:#?}"
        );
    }
    assert!(
        f.message.starts_with("MKL on its GNU threading layer")
            && f.message.contains("libgomp-e985bcbb"),
        "{}",
        f.message
    );
    // No piece of evidence twice.
    let unique: BTreeSet<_> = f.evidence.iter().collect();
    assert_eq!(unique.len(), f.evidence.len(), "{details:#?}");
}

/// A live process started without OMP_NUM_THREADS while the probe's own
/// environment has OMP_NUM_THREADS=1: the runtimes never saw the 1, so the
/// fork hazard stands (CC001), and the evidence says whose environment it
/// read. The same facts without the process would be judged by `env`.
#[test]
fn live_process_rules_judge_by_the_environment_it_started_with() {
    let (facts, plan) = scenario("linux-live-env-not-applied-fork");
    assert_eq!(
        facts.env.get("OMP_NUM_THREADS").map(String::as_str),
        Some("1")
    );
    let pid = facts.process.as_ref().expect("process").pid;
    let report = evaluate(&facts, &plan, &Config::default());
    let cc001 = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC001")
        .expect("CC001 with the initial environment");
    let want = format!("OMP_NUM_THREADS is unset in the environment process {pid} started with");
    assert!(
        cc001.evidence.iter().any(|e| e.detail == want),
        "{:#?}",
        cc001.evidence
    );
    assert_eq!(
        caiclust_rules::runtime_env(&facts).get("OMP_NUM_THREADS"),
        None
    );

    let mut not_live = facts.clone();
    not_live.process = None;
    let report = evaluate(&not_live, &plan, &Config::default());
    assert!(
        report.findings.iter().all(|f| f.rule_id != "CC001"),
        "{:#?}",
        report.findings
    );
}

/// Two OpenMP runtimes are named as people write them (LLVM OpenMP, Intel
/// OpenMP), never by their Debug names (`LlvmOpenmp`).
#[test]
fn mixed_openmp_runtimes_are_named_for_people() {
    let (facts, plan) = scenario("macos-libomp-libiomp5-caiman");
    let report = evaluate(&facts, &plan, &Config::default());
    let cc011 = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC011")
        .expect("CC011");
    assert!(
        cc011.message.contains("(LLVM OpenMP)") && cc011.message.contains("(Intel OpenMP)"),
        "{}",
        cc011.message
    );
    assert!(!cc011.message.contains("Openmp"), "{}", cc011.message);
}
