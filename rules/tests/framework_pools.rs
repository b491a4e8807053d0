//! TensorFlow's own thread pools (issue #14, point 7), on the facts of a
//! real PyPI `tensorflow-cpu` venv (`snapshots/linux-tensorflow-fork`):
//! the intra-op pool is sized by `TF_NUM_INTRAOP_THREADS`, never by
//! `OMP_NUM_THREADS`; it oversubscribes like any pool (CC006), hangs forked
//! workers (CC017, measured in VERDICTS.md), and the recommendation limits
//! it, which also makes fork safe.

mod common;

use caiclust_probe::Facts;
use caiclust_rules::{assess, evaluate, recommend, Config, Plan};

fn tensorflow_facts() -> Facts {
    common::scenarios()
        .into_iter()
        .find(|(name, _, _)| name == "linux-tensorflow-fork")
        .map(|(_, facts, _)| facts)
        .expect("the linux-tensorflow-fork snapshot")
}

fn fork(workers: usize, env: &[(&str, &str)]) -> Plan {
    Plan {
        start_method: Some("fork".into()),
        workers: Some(workers),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Plan::default()
    }
}

/// The rule ids found.
fn ids(facts: &Facts, plan: &Plan) -> Vec<String> {
    evaluate(facts, plan, &Config::default())
        .findings
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

#[test]
fn the_intra_op_pool_oversubscribes_and_omp_num_threads_does_not_limit_it() {
    let facts = tensorflow_facts();
    assert!(facts.packages.iter().any(|p| p.name == "tensorflow"));
    let report = evaluate(
        &facts,
        &fork(2, &[("OMP_NUM_THREADS", "1")]),
        &Config::default(),
    );
    let cc006 = report
        .findings
        .iter()
        .find(|f| f.rule_id == "CC006" && f.message.contains("tensorflow"))
        .unwrap_or_else(|| panic!("{:#?}", report.findings));
    assert!(
        cc006.message.contains("TF_NUM_INTRAOP_THREADS limits it"),
        "{}",
        cc006.message
    );
    assert!(ids(&facts, &fork(2, &[("OMP_NUM_THREADS", "1")])).contains(&"CC017".to_string()));
    let limited = evaluate(
        &facts,
        &fork(2, &[("TF_NUM_INTRAOP_THREADS", "1")]),
        &Config::default(),
    );
    for f in &limited.findings {
        assert!(f.rule_id != "CC017", "{f:?}");
        assert!(
            !(f.rule_id == "CC006" && f.message.contains("tensorflow")),
            "{f:?}"
        );
    }
}

#[test]
fn the_policy_presumes_the_fork_hazard_and_the_variable_fixes_it() {
    let facts = tensorflow_facts();
    let v = assess(&facts, &fork(1, &[]), &Config::default());
    assert_eq!(v.start_method_hazards, ["CC017"], "{v:?}");
    assert!(v.only_presumed());
    let fix: Vec<String> = v
        .env_fix
        .clone()
        .expect("an environment fixes CC017")
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    assert_eq!(fix, ["TF_NUM_INTRAOP_THREADS=1"]);
    // The recommendation sizes both pools per worker.
    let rec = recommend(&facts, &Config::default());
    let names: Vec<&str> = rec.env.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"TF_NUM_INTRAOP_THREADS"), "{names:?}");
    assert!(names.contains(&"TF_NUM_INTEROP_THREADS"), "{names:?}");
}
