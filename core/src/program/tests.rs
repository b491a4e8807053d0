//! Unit tests of the program planner: parsing commands, deciding
//! variables, and whole plans over real facts snapshots and scripts.

use super::*;
use caiclust_rules::EnvSetting;

fn w(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

#[test]
fn finds_the_script_of_a_python_command() {
    assert_eq!(
        script_of(&w(&["python", "-u", "-X", "dev", "run.py", "-m"])),
        Some("run.py".into())
    );
    assert_eq!(
        script_of(&w(&["/venv/bin/python3.12", "-Wignore", "a.py"])),
        Some("a.py".into())
    );
    assert_eq!(script_of(&w(&["python3", "-m", "caiman"])), None);
    assert_eq!(script_of(&w(&["python3", "-uc", "print(1)"])), None);
    assert_eq!(script_of(&w(&["python3"])), None);
    assert_eq!(script_of(&w(&["sh", "x.py"])), None);
    assert_eq!(script_of(&w(&["pythonista", "x.py"])), None);
    assert!(is_python("C:\\Python311\\python.exe") || cfg!(unix));
}

#[test]
fn explicit_and_environment_values_win() {
    let rec = vec![
        EnvSetting {
            name: "OMP_NUM_THREADS".into(),
            value: "2".into(),
            reason: "r1".into(),
            ..Default::default()
        },
        EnvSetting {
            name: "OPENBLAS_NUM_THREADS".into(),
            value: "2".into(),
            reason: "r2".into(),
            ..Default::default()
        },
        EnvSetting {
            name: "MKL_NUM_THREADS".into(),
            value: "2".into(),
            reason: "r3".into(),
            ..Default::default()
        },
    ];
    let mut rec = rec;
    rec.push(EnvSetting {
        name: "BLIS_NUM_THREADS".into(),
        value: "1".into(),
        reason: "makes fork safe (CC001)".into(),
        answers: vec!["CC001".into()],
    });
    let explicit = vec![("MKL_NUM_THREADS".to_string(), "4".to_string())];
    let env = |k: &str| match k {
        "OMP_NUM_THREADS" => Some("8".to_string()),
        "OPENBLAS_NUM_THREADS" => Some(String::new()),
        "BLIS_NUM_THREADS" => Some("2".to_string()),
        _ => None,
    };
    let a = decide_env(&rec, &explicit, env);
    let find = |n: &str| a.iter().find(|x| x.name == n).unwrap().clone();
    assert_eq!(find("MKL_NUM_THREADS").origin, Origin::Explicit);
    assert_eq!(find("MKL_NUM_THREADS").value, "4");
    assert_eq!(
        find("OMP_NUM_THREADS").origin,
        Origin::Environment {
            recommended: "2".into()
        }
    );
    assert_eq!(find("OMP_NUM_THREADS").value, "8");
    assert_eq!(find("OPENBLAS_NUM_THREADS").value, "2", "empty is unset");
    // A variable of the user's that causes a hazard is replaced, and
    // named.
    assert_eq!(find("BLIS_NUM_THREADS").value, "1");
    assert_eq!(
        find("BLIS_NUM_THREADS").origin,
        Origin::Replaced { was: "2".into() }
    );
    assert_eq!(a.len(), 4);
}

/// A facts snapshot of the rules' tests.
fn snapshot(name: &str) -> Facts {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules/tests/snapshots")
        .join(format!("{name}.facts.json"));
    Facts::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Plan `python script.py` (the script's text written to a temporary
/// folder) on `facts`, with `env` as the environment caiclust started in.
fn plan_script(
    facts: &Facts,
    script: &str,
    options: &ProgramOptions,
    env: &[(&str, &str)],
) -> ProgramPlan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.py");
    std::fs::write(&path, script).unwrap();
    let argv = vec!["python3".to_string(), path.display().to_string()];
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    plan_program(&argv, facts, &Config::default(), options, |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

fn value<'a>(plan: &'a ProgramPlan, name: &str) -> Option<&'a str> {
    plan.env
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

/// The scripts run scikit-learn (its libgomp) in the parent before the
/// pool and in the tasks: the hazard needs both (issue #14).
const GUARDED: &str = "import multiprocessing as mp\nfrom sklearn.cluster import KMeans\n\ndef f(x):\n    return KMeans(n_clusters=1).fit([[x]]).inertia_\n\nif __name__ == \"__main__\":\n    f(0)\n    with mp.Pool(2) as p:\n        p.map(f, range(4))\n";
const FORCED: &str = "import multiprocessing as mp\nfrom sklearn.cluster import KMeans\n\ndef f(x):\n    return KMeans(n_clusters=1).fit([[x]]).inertia_\n\nif __name__ == \"__main__\":\n    f(0)\n    with mp.get_context(\"fork\").Pool(2) as p:\n        p.map(f, range(4))\n";
const UNGUARDED: &str = "import multiprocessing as mp\nfrom sklearn.cluster import KMeans\n\ndef f(x):\n    return KMeans(n_clusters=1).fit([[x]]).inertia_\n\nf(0)\nwith mp.Pool(2) as p:\n    p.map(f, range(4))\n";

#[test]
fn a_guarded_script_whose_threads_keep_the_hazard_gets_the_safer_default() {
    // One worker on two CPUs: two threads each, so libgomp's pool starts.
    let facts = snapshot("linux-pypi-fork");
    let script = GUARDED.replace("mp.Pool(2)", "mp.Pool(1)");
    let plan = plan_script(&facts, &script, &ProgramOptions::default(), &[]);
    assert_eq!(plan.workers.0, 1, "{}", plan.workers.1);
    assert!(plan.threads > 1, "{}", plan.threads);
    assert!(plan.before.start_method_unsafe());
    assert_eq!(plan.hook, Some((StartMethod::Forkserver, false)));
    assert!(plan.after.safe(), "{:?}", plan.after);
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert!(
        plan.changes[0].answers.starts_with("CC001"),
        "{:?}",
        plan.changes
    );
}

#[test]
fn a_guarded_script_whose_thread_limits_make_fork_safe_keeps_fork() {
    // Two workers on two CPUs: one thread each, OMP_NUM_THREADS=1, which is
    // also CC001's fix: fork stays (fastest), and the line says what the
    // variable answers.
    let facts = snapshot("linux-pypi-fork");
    let plan = plan_script(&facts, GUARDED, &ProgramOptions::default(), &[]);
    assert_eq!(plan.workers.0, 2, "{}", plan.workers.1);
    assert!(plan.workers.1.contains("Pool(2)"), "{}", plan.workers.1);
    assert_eq!(plan.threads, 1);
    assert_eq!(plan.hook, None);
    assert_eq!(value(&plan, "OMP_NUM_THREADS"), Some("1"));
    assert!(plan.after.safe(), "{:?}", plan.after);
    assert!(
        plan.changes.iter().any(|c| c.answers.starts_with("CC001")),
        "{:?}",
        plan.changes
    );
    // A value of the user's own that restarts the pool: the method changes.
    let mut facts = facts;
    facts.env.insert("OMP_NUM_THREADS".into(), "2".into());
    let plan = plan_script(
        &facts,
        GUARDED,
        &ProgramOptions::default(),
        &[("OMP_NUM_THREADS", "2")],
    );
    assert_eq!(
        plan.hook,
        Some((StartMethod::Forkserver, false)),
        "{:?}",
        plan.changes
    );
}

#[test]
fn forced_fork_keeps_fork_and_sets_the_variables_that_make_it_safe() {
    let facts = snapshot("linux-pypi-fork");
    let plan = plan_script(&facts, FORCED, &ProgramOptions::default(), &[]);
    assert_eq!(plan.hook, None);
    assert_eq!(plan.after.start_method, "fork");
    assert_eq!(value(&plan, "OMP_NUM_THREADS"), Some("1"));
    assert!(plan.after.safe(), "{:?}", plan.after);
    assert!(
        plan.changes
            .iter()
            .any(|c| c.what.starts_with("OMP_NUM_THREADS=1") && c.answers.starts_with("CC001")),
        "{:?}",
        plan.changes
    );
}

#[test]
fn an_unguarded_script_keeps_fork_and_is_made_safe_by_the_environment() {
    let facts = snapshot("linux-pypi-fork");
    let plan = plan_script(&facts, UNGUARDED, &ProgramOptions::default(), &[]);
    assert_eq!(
        plan.hook, None,
        "spawn and forkserver would re-run its top level"
    );
    assert_eq!(value(&plan, "OMP_NUM_THREADS"), Some("1"));
    assert!(plan.after.safe());
}

#[test]
#[cfg(unix)] // fork is chosen only where the program runs: a host with fork.
fn an_unguarded_script_on_a_forkserver_default_gets_fork_made_safe() {
    // Python 3.14 on Linux: forkserver by default.
    let facts = snapshot("linux-python314-implicit");
    let plan = plan_script(&facts, UNGUARDED, &ProgramOptions::default(), &[]);
    assert_eq!(plan.before.start_method, "forkserver");
    assert_eq!(
        plan.hook,
        Some((StartMethod::Fork, false)),
        "{:?}",
        plan.changes
    );
    assert!(!plan.after.start_method_unsafe(), "{:?}", plan.after);
}

#[test]
#[cfg(not(unix))]
fn an_unguarded_script_keeps_its_start_method_on_a_host_without_fork() {
    // The same script and facts; the program runs here, where there is no
    // fork to switch to.
    let facts = snapshot("linux-python314-implicit");
    let plan = plan_script(&facts, UNGUARDED, &ProgramOptions::default(), &[]);
    assert_eq!(plan.before.start_method, "forkserver");
    assert_eq!(plan.hook, None, "{:?}", plan.changes);
}

/// As FORCED, with numpy's BLAS (Debian's BLIS) run on both sides.
const FORCED_NUMPY: &str = "import multiprocessing as mp\nimport numpy as np\n\ndef f(x):\n    return float((np.ones((64, 64)) @ np.ones((64, 64))).sum()) + x\n\nif __name__ == \"__main__\":\n    f(0)\n    with mp.get_context(\"fork\").Pool(2) as p:\n        p.map(f, range(4))\n";

#[test]
fn a_users_variable_that_causes_the_hazard_is_replaced_and_named() {
    let facts = snapshot("linux-debian-blis-openmp-default");
    // BLIS is single-threaded by default: safe, until the user asks for two.
    let quiet = plan_script(&facts, FORCED_NUMPY, &ProgramOptions::default(), &[]);
    assert!(quiet.changes.is_empty(), "{:?}", quiet.changes);
    let mut facts = facts;
    facts.env.insert("BLIS_NUM_THREADS".into(), "2".into());
    let plan = plan_script(
        &facts,
        FORCED_NUMPY,
        &ProgramOptions::default(),
        &[("BLIS_NUM_THREADS", "2")],
    );
    assert_eq!(value(&plan, "BLIS_NUM_THREADS"), Some("1"));
    let change = plan.changes.iter().find(|c| {
        c.what
            .contains("BLIS_NUM_THREADS=2 from your environment replaced")
    });
    assert!(
        change.is_some_and(|c| c.answers.starts_with("CC001")),
        "{:?}",
        plan.changes
    );
    assert!(plan.after.safe(), "{:?}", plan.after);
}

#[test]
fn no_fix_changes_nothing_and_forcing_a_method_forces_it() {
    let facts = snapshot("linux-pypi-fork");
    let as_is = ProgramOptions {
        no_fix: true,
        ..ProgramOptions::default()
    };
    let plan = plan_script(&facts, FORCED, &as_is, &[]);
    assert!(plan.env.is_empty() && plan.hook.is_none() && plan.changes.is_empty());
    assert!(plan.after.start_method_unsafe());
    let forced = ProgramOptions {
        start_method: Some(StartMethod::Forkserver),
        ..ProgramOptions::default()
    };
    let plan = plan_script(&facts, FORCED, &forced, &[]);
    assert_eq!(plan.hook, Some((StartMethod::Forkserver, true)));
    assert!(plan.after.safe());
}

#[test]
fn a_script_without_pools_is_one_process_with_every_cpu() {
    let facts = snapshot("linux-pypi-fork");
    let plan = plan_script(
        &facts,
        "import numpy\nprint(numpy.ones(3).sum())\n",
        &ProgramOptions::default(),
        &[],
    );
    assert_eq!(plan.workers.0, 1, "{}", plan.workers.1);
    assert_eq!(
        plan.threads,
        facts
            .host
            .usable_cpus
            .as_ref()
            .map_or(facts.host.logical_cpus, |c| c.value)
            .max(1)
    );
}

#[test]
fn a_script_that_only_imports_the_package_keeps_fork_as_caiclust_check_judges_it() {
    // scikit-learn imported, only numpy run: its libgomp never starts in
    // the parent, so fork is safe (measured: VERDICTS.md), and caiclust
    // run changes nothing the script did not need.
    let facts = snapshot("linux-pypi-fork");
    let script = "import multiprocessing as mp\nimport numpy as np\nimport sklearn\n\ndef f(x):\n    return float(np.ones(3).sum()) + x\n\nif __name__ == \"__main__\":\n    f(0)\n    with mp.Pool(1) as p:\n        p.map(f, range(4))\n";
    let plan = plan_script(&facts, script, &ProgramOptions::default(), &[]);
    assert!(plan.threads > 1, "{}", plan.threads);
    assert_eq!(plan.hook, None, "{:?}", plan.changes);
    assert!(!plan.before.start_method_unsafe(), "{:?}", plan.before);
    // The same script with a module of its own beside it that may run
    // scikit-learn: not read, so judged as unknown code, and made safe.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("helpers.py"), "import sklearn\n").unwrap();
    let path = dir.path().join("script.py");
    std::fs::write(
        &path,
        script.replace("import sklearn\n", "import helpers\n"),
    )
    .unwrap();
    let argv = vec!["python3".to_string(), path.display().to_string()];
    let plan = plan_program(
        &argv,
        &facts,
        &Config::default(),
        &ProgramOptions::default(),
        |_| None,
    );
    assert!(plan.after.safe(), "{:?}", plan.after);
    assert!(
        plan.changes.iter().any(|c| c.answers.starts_with("CC001")),
        "{:?}",
        plan.changes
    );
}
