//! `caiclust map -f module:function`: Python callables in worker
//! processes, one JSON line per result, exceptions with their traceback,
//! `--json-args`, several input sources as positional arguments, the
//! recommended thread variables inside the workers, and a job log.
//!
//! Unix only: the fixture venvs' Linux Pythons as workers.
#![cfg(unix)]

mod map_support;
use map_support::*;

const TASKS: &str = r#"
import os

def square(x):
    return int(x) ** 2

def add(a, b=0):
    return a + b

def boom(x):
    raise ValueError(f"bad input {x!r}")

def threads(_):
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}

def die(_):
    os._exit(3)

def slow(x):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "started"), "a") as f:
        f.write(f"{x}\n")
    import time
    time.sleep(0.5)
    return x
"#;

fn setup() -> (Work, String) {
    let w = Work::new();
    w.write("tasks.py", TASKS);
    let fx = caiclust_tests::fixtures();
    (w, fx.venv_numpy.to_str().expect("utf-8 path").to_string())
}

fn lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn results_are_json_lines_in_input_order() {
    let (w, py) = setup();
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        &py,
        "-j",
        "2",
        "-k",
        "--joblog",
        "py.log",
        "-f",
        "tasks:square",
        ":::",
        "3",
        "1",
        "12",
    ]));
    expect_status(&o, 0);
    let got = lines(&o);
    assert_eq!(
        got,
        [
            serde_json::json!({"seq": 1, "input": "3", "value": 9}),
            serde_json::json!({"seq": 2, "input": "1", "value": 1}),
            serde_json::json!({"seq": 3, "input": "12", "value": 144}),
        ]
    );
    assert!(stdout(&o).starts_with("{\"seq\":1,\"input\":\"3\",\"value\":9}\n"));
    let rows = joblog_rows(&w.read("py.log"));
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r[6] == "0" && r[7] == "0"));
    assert!(
        rows.iter().any(|r| r[8] == "tasks:square(\"12\")"),
        "{rows:?}"
    );
}

#[test]
fn json_arguments_and_several_sources() {
    let (w, py) = setup();
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        &py,
        "-k",
        "--json-args",
        "-f",
        "tasks:add",
        ":::",
        "[1, 2]",
        "{\"a\": 5, \"b\": 1}",
        "7",
    ]));
    expect_status(&o, 0);
    let values: Vec<_> = lines(&o).iter().map(|l| l["value"].clone()).collect();
    assert_eq!(values, [3, 6, 7]);
    // Two sources: two positional string arguments, every combination.
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        &py,
        "-k",
        "-f",
        "tasks:add",
        ":::",
        "a",
        "b",
        ":::",
        "x",
        "y",
    ]));
    expect_status(&o, 0);
    let values: Vec<_> = lines(&o).iter().map(|l| l["value"].clone()).collect();
    assert_eq!(values, ["ax", "ay", "bx", "by"]);
    assert_eq!(lines(&o)[1]["input"], serde_json::json!(["a", "y"]));
}

#[test]
fn exceptions_and_dead_workers_are_reported() {
    let (w, py) = setup();
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        &py,
        "--joblog",
        "err.log",
        "-f",
        "tasks:boom",
        ":::",
        "zz",
    ]));
    expect_status(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("job 1 raised ValueError: bad input 'zz': tasks:boom(\"zz\")"),
        "{err}"
    );
    assert!(err.contains("Traceback (most recent call last):"), "{err}");
    assert!(err.contains("tasks.py\", line 11, in boom"), "{err}");
    let got = lines(&o);
    assert_eq!(got[0]["error"]["kind"], "exception");
    assert_eq!(got[0]["error"]["type_name"], "ValueError");
    assert_eq!(joblog_rows(&w.read("err.log"))[0][6], "1");

    // A worker that dies under its task: the task fails with the reason
    // (after the core's free retry), the map goes on.
    let o = output(&mut w.caiclust(&["map", "--python", &py, "-k", "-f", "tasks:die", ":::", "a"]));
    expect_status(&o, 1);
    assert!(stderr(&o).contains("job 1 lost its worker"), "{}", both(&o));
}

#[test]
fn workers_run_with_the_recommended_thread_variables() {
    let (w, py) = setup();
    let want = recommended_env(std::path::Path::new(&py));
    let o = output(&mut w.caiclust(&["map", "--python", &py, "-f", "tasks:threads", ":::", "a"]));
    expect_status(&o, 0);
    let got = &lines(&o)[0]["value"];
    assert!(!want.is_empty());
    for (k, v) in &want {
        if let Some(seen) = got.get(k) {
            assert_eq!(seen, v, "{k} in the worker: {got}");
        }
    }
    assert!(
        want.iter()
            .any(|(k, _)| got.get(k).is_some_and(|v| !v.is_null())),
        "some recommended variable reaches the worker: {got} vs {want:?}"
    );
}

#[test]
fn a_command_and_a_function_together_are_refused() {
    let (w, py) = setup();
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        &py,
        "-f",
        "tasks:square",
        "echo",
        ":::",
        "1",
    ]));
    expect_status(&o, 255);
    assert!(stderr(&o).contains("not both"), "{}", both(&o));
}

#[test]
fn fork_is_made_safe_or_refused_where_the_rules_see_a_hazard_unless_forced() {
    // The PyPI venv has scikit-learn's GNU OpenMP: forked workers hang.
    let w = Work::new();
    w.write("tasks.py", TASKS);
    let pypi = caiclust_tests::fixtures().venv_pypi;
    let py = pypi.to_str().expect("utf-8");
    // With the recommendation (the default), fork gets the environment
    // that makes it safe, and says so.
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        py,
        "--start-method",
        "fork",
        "-v",
        "-f",
        "tasks:square",
        ":::",
        "2",
    ]));
    expect_status(&o, 0);
    assert_eq!(lines(&o)[0]["value"], 4);
    let err = stderr(&o);
    assert!(
        err.contains("start method fork") && err.contains("OMP_NUM_THREADS=1"),
        "{err}"
    );
    // Without it (--no-auto), nothing makes fork safe: refused.
    let o = output(&mut w.caiclust(&[
        "map",
        "--no-auto",
        "--python",
        py,
        "--start-method",
        "fork",
        "-f",
        "tasks:square",
        ":::",
        "2",
    ]));
    expect_status(&o, 255);
    let err = stderr(&o);
    assert!(
        err.contains("fork start method is refused") && err.contains("CC001"),
        "{err}"
    );
    assert!(err.contains("--force-fork"), "{err}");
    let o = output(&mut w.caiclust(&[
        "map",
        "--no-auto",
        "--python",
        py,
        "--start-method",
        "fork",
        "--force-fork",
        "-f",
        "tasks:square",
        ":::",
        "2",
    ]));
    expect_status(&o, 0);
    assert_eq!(lines(&o)[0]["value"], 4);
}

/// Calls are handed to the cluster well ahead of free workers (so tiny
/// ones travel in batches); a first Ctrl-C still starts nothing more:
/// what the cluster holds and has not begun is withdrawn, the running
/// calls finish and are logged, and the rest are reported as not run.
#[test]
fn first_ctrl_c_starts_no_more_calls() {
    let (w, py) = setup();
    let inputs = numbers(40);
    let mut args = vec![
        "map",
        "--python",
        &py,
        "-j",
        "2",
        "--joblog",
        "run.log",
        "-f",
        "tasks:slow",
        ":::",
    ];
    args.extend(strs(&inputs));
    let child = w
        .caiclust(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    assert!(wait_for(std::time::Duration::from_secs(30), || w
        .read("started")
        .lines()
        .count()
        >= 2));
    let t0 = std::time::Instant::now();
    signal(child.id(), "INT");
    let o = child.wait_with_output().expect("wait");
    let waited = t0.elapsed();
    assert_eq!(o.status.code(), Some(130), "{}", both(&o));
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the queued calls were not run: {waited:?}"
    );
    let started = w.read("started").lines().count();
    assert!((2..=4).contains(&started), "{started} calls started");
    let logged = joblog_seqs(&w.read("run.log")).len();
    assert_eq!(logged, started, "every call that ran is logged");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{} not run (interrupted)", 40 - logged)),
        "{err}"
    );
    assert!(!err.contains("stopped while running"), "{err}");
}
