//! The hazard policy over every facts snapshot (`snapshots/*.facts.json`,
//! from real `caiclust probe --json` output): its verdict agrees with the
//! rules' own findings, its environment fixes really remove the hazards,
//! its safe start methods are safe, and the recommendation follows it.

mod common;
use common::scenarios;

use std::path::Path;

use caiclust_probe::Facts;
use caiclust_rules::{
    assess, evaluate, find_rule, recommend, Category, Config, Level, Plan, Verdict,
};

/// Every snapshot: name, facts, plan.
fn snapshots() -> Vec<(String, Facts, Plan)> {
    let all = scenarios();
    assert!(all.len() >= 40, "{} snapshots", all.len());
    all
}

fn snapshot(name: &str) -> (Facts, Plan) {
    snapshots()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, f, p)| (f, p))
        .unwrap_or_else(|| panic!("no snapshot {name}"))
}

fn with_env(plan: &Plan, verdict: &Verdict) -> Plan {
    let mut p = plan.clone();
    for e in verdict.env_fix.iter().flatten() {
        p.env.insert(e.name.clone(), e.value.clone());
    }
    p
}

#[test]
fn the_verdict_is_the_error_level_hang_or_crash_findings_and_the_presumed_ones() {
    let config = Config::default();
    let mut unsafe_seen = 0;
    let mut presumed_seen = 0;
    for (name, facts, plan) in snapshots() {
        let v = assess(&facts, &plan, &config);
        let mut want: Vec<String> = evaluate(&facts, &plan, &config)
            .findings
            .into_iter()
            .filter(|f| {
                (f.level == Level::Error || (f.presumed && f.level == Level::Warning))
                    && find_rule(&f.rule_id).unwrap().info().category == Category::HangOrCrash
            })
            .map(|f| f.rule_id)
            .collect();
        want.sort();
        let mut got: Vec<String> = v.hazards.iter().map(|f| f.rule_id.clone()).collect();
        got.sort();
        assert_eq!(got, want, "{name}");
        assert_eq!(v.safe(), want.is_empty(), "{name}");
        unsafe_seen += usize::from(!v.safe());
        if v.only_presumed() {
            presumed_seen += 1;
            assert!(
                v.summary().contains(": at risk if"),
                "{name}: {}",
                v.summary()
            );
            assert!(
                v.hazards.iter().all(|f| f.level == Level::Warning),
                "{name}"
            );
        }
    }
    assert!(unsafe_seen >= 5, "the snapshots hold unsafe plans");
    assert!(presumed_seen >= 3, "the snapshots hold plans only at risk");
}

#[test]
fn environment_fixes_and_safe_start_methods_hold_when_judged_again() {
    let config = Config::default();
    let mut fixed = 0;
    for (name, facts, plan) in snapshots() {
        let v = assess(&facts, &plan, &config);
        if let Some(fix) = v.env_fix.as_ref().filter(|f| !f.is_empty()) {
            let again = assess(&facts, &with_env(&plan, &v), &config);
            assert!(again.safe(), "{name}: {fix:?} leaves {:?}", again.hazards);
            fixed += 1;
        }
        for m in &v.safe_start_methods {
            let other = Plan {
                start_method: Some(m.clone()),
                ..plan.clone()
            };
            let w = assess(&facts, &other, &config);
            assert!(!w.start_method_unsafe(), "{name}: {m} said safe: {w:?}");
        }
        // A start-method hazard is never one that every start method has.
        if v.start_method_unsafe() {
            assert!(!v.safe_start_methods.contains(&v.start_method), "{name}");
        }
    }
    assert!(fixed >= 4, "environment fixes seen: {fixed}");
}

#[test]
fn scikit_learn_under_fork_is_unsafe_and_fixed_by_omp_num_threads_or_forkserver() {
    let (facts, plan) = snapshot("linux-pypi-fork");
    let v = assess(&facts, &plan, &Config::default());
    assert_eq!(v.start_method, "fork");
    assert_eq!(v.start_method_hazards, ["CC001"]);
    assert_eq!(v.safe_start_methods, ["forkserver", "spawn"]);
    let fix = v.env_fix.clone().expect("an environment fixes CC001");
    assert_eq!(
        fix.iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect::<Vec<_>>(),
        ["OMP_NUM_THREADS=1"]
    );
    // Installed, not shown used (a static probe, no script): a warning,
    // and the plan at risk; the policy still avoids it.
    assert!(v.only_presumed(), "{v:?}");
    assert!(
        v.summary().contains(
            "at risk if the code runs the pool before the fork and in the workers (CC001)"
        ),
        "{}",
        v.summary()
    );
}

#[test]
fn a_users_own_variable_that_starts_the_pool_is_what_the_fix_changes() {
    // Debian BLIS on OpenMP is single-threaded by default; BLIS_NUM_THREADS=2
    // starts its libgomp pool, and that is what must change under fork.
    let (facts, plan) = snapshot("linux-debian-blis-openmp-threads");
    let v = assess(&facts, &plan, &Config::default());
    assert!(v.start_method_unsafe(), "{v:?}");
    let fix = v.env_fix.clone().unwrap();
    assert!(
        fix.iter()
            .any(|e| e.name == "BLIS_NUM_THREADS" && e.value == "1"),
        "{fix:?}"
    );
    let (quiet, plan) = snapshot("linux-debian-blis-openmp-default");
    assert!(assess(&quiet, &plan, &Config::default()).safe());
}

#[test]
fn a_running_process_cannot_be_fixed_by_variables() {
    let (facts, plan) = snapshot("linux-live-fork");
    let v = assess(&facts, &plan, &Config::default());
    assert!(!v.safe(), "{v:?}");
    assert_eq!(v.env_fix, None);
}

#[test]
fn a_rule_set_to_warning_no_longer_makes_the_plan_unsafe() {
    let (facts, plan) = snapshot("linux-pypi-fork");
    let config =
        Config::from_caiclust_toml("[rules]\nCC001 = \"warning\"\n", Path::new("caiclust.toml"))
            .unwrap();
    assert!(assess(&facts, &plan, &config).safe());
}

#[test]
fn the_recommendation_follows_the_verdict() {
    let config = Config::default();
    for (name, facts, _) in snapshots() {
        let rec = recommend(&facts, &config);
        let fork = Plan {
            start_method: Some("fork".into()),
            workers: Some(rec.workers.value),
            ..Plan::default()
        };
        let fork_verdict = assess(&facts, &fork, &config);
        if facts.target_os == caiclust_probe::OsFamily::Linux {
            let want = if fork_verdict.start_method_unsafe() {
                "forkserver"
            } else {
                "fork"
            };
            assert_eq!(rec.start_method.value, want, "{name}");
        }
        // The plan it recommends has no start-method hazard left.
        assert!(
            !rec.verdict.start_method_unsafe(),
            "{name}: {:?}",
            rec.verdict
        );
        // Fork asked for explicitly: the recommendation carries the fix.
        let forced = recommend(
            &facts,
            &Config {
                start_method: Some("fork".into()),
                ..config.clone()
            },
        );
        if fork_verdict.env_fix.is_some() && facts.target_os != caiclust_probe::OsFamily::Windows {
            assert!(
                forced.verdict.safe() || !fork_verdict.start_method_unsafe(),
                "{name}: {:?}",
                forced.verdict
            );
            for e in fork_verdict.env_fix.iter().flatten() {
                let got = forced.env.iter().find(|x| x.name == e.name);
                assert_eq!(
                    got.map(|x| x.value.as_str()),
                    Some(e.value.as_str()),
                    "{name}"
                );
                assert!(!got.unwrap().answers.is_empty(), "{name}");
            }
        }
    }
}

#[test]
fn duplicate_openmp_openblas_copies_are_limited_by_omp_num_threads() {
    // CC016 once told users of OpenMP builds of OpenBLAS to set
    // OPENBLAS_NUM_THREADS, which those builds ignore.
    let (mut facts, plan) = snapshot("linux-pypi-fork");
    let dup = facts.duplicates[0].paths.clone();
    for lib in facts.libraries.iter_mut().filter(|l| dup.contains(&l.path)) {
        lib.openmp_runtime = facts_gomp();
        lib.threading_layer = Some(caiclust_probe::Conclusion::new(
            caiclust_probe::ThreadingLayer::Openmp,
            caiclust_probe::Confidence::High,
            vec![],
        ));
    }
    let report = evaluate(&facts, &plan, &Config::default());
    let f = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC016")
        .expect("CC016");
    let fix = f.fix.as_deref().unwrap();
    assert!(fix.contains("OMP_NUM_THREADS"), "{fix}");
    assert!(!fix.contains("OPENBLAS_NUM_THREADS"), "{fix}");
}

fn facts_gomp() -> Option<caiclust_probe::Conclusion<caiclust_probe::Vendor>> {
    Some(caiclust_probe::Conclusion::new(
        caiclust_probe::Vendor::GnuOpenmp,
        caiclust_probe::Confidence::High,
        vec![],
    ))
}
