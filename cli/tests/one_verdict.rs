//! One hazard policy, one verdict: every facts snapshot of the rules'
//! tests (`rules/tests/snapshots/*.facts.json`, from real `caiclust probe
//! --json` output of Linux, macOS and Windows environments) goes through
//! `caiclust-check`, `caiclust env`, `caiclust run`, `caiclust map` and
//! `Cluster` (the library), with the snapshot's plan, and each must reach
//! the same verdict on it: which start-method hazards the plan has, and
//! whether an environment makes it safe. Where a consumer fixes the plan,
//! the plan it ends with must be safe by the same policy.

use std::path::{Path, PathBuf};
use std::process::Command;

use caiclust_core::probe::Facts;
use caiclust_core::rules::{assess, Config, Plan, Verdict};
use caiclust_core::{Cluster, CoreError, StartMethod};
use serde_json::Value;

const CAICLUST: &str = env!("CARGO_BIN_EXE_caiclust");
const CHECK: &str = env!("CARGO_BIN_EXE_caiclust-check");

struct Snapshot {
    name: String,
    path: PathBuf,
    facts: Facts,
    plan: Plan,
}

/// The rules' snapshots, each with its plan, and the README's example
/// (`examples/`, with the default plan).
fn snapshots() -> Vec<Snapshot> {
    // (No `..`: wine cannot open a Unix path that holds one.)
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the workspace");
    let mut paths: Vec<PathBuf> = Vec::new();
    for dir in ["rules/tests/snapshots", "examples"] {
        paths.extend(
            std::fs::read_dir(root.join(dir))
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".facts.json")),
        );
    }
    paths.sort();
    let out: Vec<Snapshot> = paths
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".facts.json")
                .to_string();
            let facts = Facts::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let plan_path = path.with_file_name(format!("{name}.plan.json"));
            let plan: Plan = match std::fs::read_to_string(&plan_path) {
                Ok(text) => serde_json::from_str(&text).unwrap(),
                Err(_) => Plan::default(),
            };
            Snapshot {
                name,
                path,
                facts,
                plan,
            }
        })
        .collect();
    assert!(out.len() >= 40, "{} snapshots", out.len());
    out
}

/// `--start-method M --workers N` of a snapshot's plan.
fn plan_args(plan: &Plan, with_workers: bool) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(m) = &plan.start_method {
        a.extend(["--start-method".to_string(), m.clone()]);
    }
    if let (true, Some(n)) = (with_workers, plan.workers) {
        a.extend(["--workers".to_string(), n.to_string()]);
    }
    a
}

/// Run a command in a folder with no configuration; its standard output.
/// `caiclust-check` exits 1 for findings at the deny level, which is a
/// result, not a failure.
fn run(cmd: &mut Command) -> String {
    let out = cmd.current_dir(std::env::temp_dir()).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// What `caiclust-check --format json` says of the plan.
fn check(s: &Snapshot) -> Verdict {
    let json = run(Command::new(CHECK)
        .arg("--facts")
        .arg(&s.path)
        .args(plan_args(&s.plan, true))
        .args(["--format", "json"]));
    let doc: Value = serde_json::from_str(&json).unwrap();
    serde_json::from_value(doc["verdict"].clone()).unwrap()
}

#[test]
fn every_consumer_reaches_the_same_verdict_on_every_snapshot() {
    let config = Config::default();
    let mut unsafe_plans = 0;
    for s in snapshots() {
        let name = &s.name;
        let want = assess(&s.facts, &s.plan, &config);
        // caiclust-check: the policy's verdict, as is.
        let checked = check(&s);
        assert_eq!(checked, want, "{name}: caiclust-check");
        unsafe_plans += usize::from(want.start_method_unsafe());

        // caiclust env: values for the same start method, with the fix
        // where that method is unsafe, and the header says so.
        let env_text = run(Command::new(CAICLUST)
            .args(["env", "--shell", "dotenv", "--facts"])
            .arg(&s.path)
            .args(plan_args(&s.plan, true)));
        let header = env_text.lines().next().unwrap_or_default();
        assert!(
            header.contains(&format!("started with {} (", want.start_method)),
            "{name}: caiclust env assumes another start method: {header}"
        );
        let values: Vec<(String, String)> = env_text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        match &want.env_fix {
            Some(fix) => {
                for e in fix {
                    assert!(
                        values.contains(&(e.name.clone(), e.value.clone())),
                        "{name}: caiclust env lacks {}={}: {env_text}",
                        e.name,
                        e.value
                    );
                }
                let with = Plan {
                    env: values.iter().cloned().collect(),
                    ..s.plan.clone()
                };
                assert!(
                    !assess(&s.facts, &with, &config).start_method_unsafe(),
                    "{name}: eval \"$(caiclust env)\" leaves the start method unsafe"
                );
            }
            None if want.start_method_unsafe() => assert!(
                header.contains("still unsafe"),
                "{name}: caiclust env must say it cannot fix {:?}: {header}",
                want.start_method_hazards
            ),
            // Not a start-method hazard (CC010: more workers than Windows
            // handles): the recommendation's own worker cap answers it.
            None => {}
        }

        // caiclust run: the same hazards before, and the same fix.
        let plan_json = run(Command::new(CAICLUST)
            .args(["run", "--print-plan", "--facts"])
            .arg(&s.path)
            .args(plan_args(&s.plan, false)));
        let planned: Value = serde_json::from_str(&plan_json).unwrap();
        assert_eq!(
            ids(&planned["before"]["start_method_hazards"]),
            want.start_method_hazards,
            "{name}: caiclust run"
        );
        assert_eq!(
            planned["before"]["start_method"], want.start_method,
            "{name}: caiclust run"
        );
        let after: Verdict = serde_json::from_value(planned["after"].clone()).unwrap();
        // Without a script it cannot change the start method: the
        // environment fixes it, or nothing does (a running process).
        assert_eq!(
            after.start_method_unsafe(),
            want.start_method_unsafe() && want.env_fix.is_none(),
            "{name}: caiclust run: {after:?}"
        );

        // caiclust map and Cluster: with the plan's own start method, fork
        // is refused exactly when no environment makes it safe; otherwise
        // the pool runs a plan the policy finds safe. Both agree.
        let method: Option<StartMethod> =
            s.plan.start_method.as_deref().map(|m| m.parse().unwrap());
        let mut builder = Cluster::builder()
            .auto(true)
            .facts(s.facts.clone())
            .config(config.clone());
        if let Some(m) = method {
            builder = builder.start_method(m);
        }
        if let Some(n) = s.plan.workers {
            builder = builder.workers(n);
        }
        let map_json = run(Command::new(CAICLUST)
            .args(["map", "--print-plan", "--facts"])
            .arg(&s.path)
            .args(plan_args(&s.plan, false))
            .args(
                s.plan
                    .workers
                    .map(|n| vec!["-j".to_string(), n.to_string()])
                    .unwrap_or_default(),
            )
            .args(["--", "true", ":::", "x"]));
        let mapped: Value = serde_json::from_str(&map_json).unwrap();
        match builder.plan() {
            Ok((settings, advice)) => {
                assert!(
                    mapped["refused"].is_null(),
                    "{name}: map refused what Cluster accepts"
                );
                assert_eq!(
                    mapped["start_method"],
                    settings.start_method.as_str(),
                    "{name}: map and Cluster"
                );
                assert!(
                    !advice.verdict.start_method_unsafe(),
                    "{name}: Cluster runs an unsafe plan: {:?}",
                    advice.verdict
                );
                if method.is_some() {
                    assert!(
                        !want.start_method_unsafe() || want.env_fix.is_some(),
                        "{name}: Cluster accepted a start method nothing makes safe"
                    );
                }
            }
            Err(CoreError::ForkRefused { findings }) => {
                assert!(!mapped["refused"].is_null(), "{name}: map accepted");
                assert!(
                    want.start_method_unsafe() && want.env_fix.is_none(),
                    "{name}"
                );
                for id in &want.start_method_hazards {
                    assert!(
                        findings.iter().any(|f| f.starts_with(id.as_str())),
                        "{name}"
                    );
                }
            }
            Err(CoreError::Unsupported { .. }) => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(unsafe_plans >= 5, "the snapshots hold unsafe plans");
}
