//! `caiclust run -- CMD`: the recommended thread variables reach the
//! program (a value already in the environment, or given with `--env`,
//! wins, and the summary says so); the exit status is the program's
//! (128 plus N when signal N killed it, 127 when it does not exist, 125
//! for caiclust's own errors); signals sent to caiclust reach the program;
//! `python script.py` is linted first.
//!
//! Unix only: the fixture venvs' Linux Pythons and `sh` programs.
#![cfg(unix)]

mod map_support;
use map_support::*;

use std::path::PathBuf;
use std::process::Stdio;

fn debian() -> String {
    caiclust_tests::fixtures()
        .debian_python
        .to_str()
        .expect("utf-8")
        .to_string()
}

fn pypi() -> String {
    caiclust_tests::fixtures()
        .venv_pypi
        .to_str()
        .expect("utf-8")
        .to_string()
}

/// `caiclust run` without the thread variables inherited from the test's
/// own environment.
fn run_cmd(w: &Work, args: &[&str]) -> std::process::Command {
    let mut c = w.caiclust(&[&["run"], args].concat());
    for (k, _) in std::env::vars() {
        if k.ends_with("_NUM_THREADS")
            || k == "VECLIB_MAXIMUM_THREADS"
            || k == "MKL_THREADING_LAYER"
        {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn the_recommended_variables_reach_the_program() {
    let w = Work::new();
    let py = debian();
    let want = run_env(std::path::Path::new(&py));
    assert!(!want.is_empty(), "Debian numpy: something is recommended");
    let script: String = want
        .iter()
        .map(|(k, _)| format!("echo {k}=${k};"))
        .collect();
    let o = output(&mut run_cmd(
        &w,
        &["--python", &py, "--", "sh", "-c", &script],
    ));
    expect_status(&o, 0);
    let expected: String = want.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    assert_eq!(stdout(&o), expected);
    let first = format!("{}={}", want[0].0, want[0].1);
    assert!(
        stderr(&o).starts_with("caiclust: running with ") && stderr(&o).contains(&first),
        "{}",
        both(&o)
    );
    // -q: no summary.
    let o = output(&mut run_cmd(&w, &["--python", &py, "-q", "--", "true"]));
    expect_status(&o, 0);
    assert_eq!(stderr(&o), "");
}

#[test]
fn the_python_of_the_command_is_probed() {
    // No --python: `python ...` names the interpreter to probe.
    let w = Work::new();
    let py = debian();
    let want = run_env(std::path::Path::new(&py));
    let (k, v) = &want[0];
    let o = output(&mut run_cmd(
        &w,
        &[
            "--",
            &py,
            "-c",
            &format!("import os; print(os.environ['{k}'])"),
        ],
    ));
    expect_status(&o, 0);
    assert_eq!(stdout(&o), format!("{v}\n"));
    assert!(stderr(&o).contains(&py), "{}", both(&o));
}

#[test]
fn explicit_values_win_and_are_named() {
    // The PyPI venv: GNU OpenMP (scikit-learn), OpenBLAS and OpenCV. The
    // program is not Python, so fork stays and OMP_NUM_THREADS=1 makes it
    // safe (CC001); the other variables are thread limits.
    let w = Work::new();
    let py = pypi();
    let want = run_env(std::path::Path::new(&py));
    let get = |k: &str| want.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("OMP_NUM_THREADS").as_deref(), Some("1"), "{want:?}");
    let a = "OMP_NUM_THREADS";
    let b = "OPENBLAS_NUM_THREADS";
    let rec_b = get(b).unwrap_or_else(|| panic!("{want:?}"));
    let o = output(
        run_cmd(
            &w,
            &[
                "--python",
                &py,
                "--env",
                &format!("{a}=5"),
                "--",
                "sh",
                "-c",
                &format!("echo ${a} ${b}"),
            ],
        )
        .env(b, "7"),
    );
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "5 7\n");
    let err = stderr(&o);
    assert!(err.contains(&format!("{a}=5 from --env")), "{err}");
    assert!(
        err.contains(&format!(
            "kept {b}=7 from your environment (recommended {rec_b})"
        )),
        "{err}"
    );
    // The explicit value defeats CC001's fix: said, with the finding.
    assert!(
        err.lines()
            .any(|l| l.contains("OMP_NUM_THREADS=5 is kept as given") && l.contains("CC001")),
        "{err}"
    );
    // A value of the user's own that causes the hazard is replaced and
    // named as the cause.
    let o = output(
        run_cmd(
            &w,
            &["--python", &py, "--", "sh", "-c", &format!("echo ${a}")],
        )
        .env(a, "2"),
    );
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "1\n");
    assert!(
        stderr(&o).lines().any(
            |l| l.contains("OMP_NUM_THREADS=2 from your environment replaced")
                && l.contains("CC001")
        ),
        "{}",
        both(&o)
    );
    let a = &a.to_string();
    // --print-env without a command: the variables and why, nothing runs.
    let o = output(&mut run_cmd(&w, &["--python", &py, "--print-env"]));
    expect_status(&o, 0);
    let first = stdout(&o).lines().next().unwrap_or("").to_string();
    assert!(
        first.starts_with(&format!("{a}='")) && first.contains("  # "),
        "{}",
        both(&o)
    );
}

#[test]
fn exit_status_is_the_programs() {
    let w = Work::new();
    let py = debian();
    for (line, code) in [
        ("exit 0", 0),
        ("exit 42", 42),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
    ] {
        let o = output(&mut run_cmd(
            &w,
            &["--python", &py, "-q", "--", "sh", "-c", line],
        ));
        expect_status(&o, code);
    }
    let o = output(&mut run_cmd(
        &w,
        &["--python", &py, "--", "no-such-program-xyz"],
    ));
    expect_status(&o, 127);
    assert!(
        stderr(&o).contains("cannot run no-such-program-xyz"),
        "{}",
        both(&o)
    );
    w.write("not-exec", "#!/bin/sh\n");
    let o = output(&mut run_cmd(&w, &["--python", &py, "--", "./not-exec"]));
    expect_status(&o, 126);
}

#[test]
fn caiclusts_own_errors_are_125() {
    let w = Work::new();
    for (args, needle) in [
        (&["--env", "NOPE", "--", "true"][..], "NOPE"),
        (&[][..], "no command"),
        (
            &["--python", "/no/such/python", "--", "true"][..],
            "/no/such/python",
        ),
        (&["--bogus", "--", "true"][..], "--bogus"),
        (
            &["--config", "/no/such.toml", "--", "true"][..],
            "/no/such.toml",
        ),
    ] {
        let o = output(&mut run_cmd(&w, args));
        expect_status(&o, 125);
        assert!(stderr(&o).contains(needle), "{args:?}: {}", both(&o));
    }
}

#[test]
fn signals_sent_to_caiclust_reach_the_program() {
    let w = Work::new();
    let py = debian();
    let line = "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let mut child = run_cmd(&w, &["--python", &py, "-q", "--", "sh", "-c", line])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut first).expect("ready");
    assert_eq!(&first, b"ready\n");
    signal(child.id(), "TERM");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    let status = child.wait().expect("wait");
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7), "the program's own exit status");
}

#[test]
fn a_python_script_is_linted_before_it_runs() {
    let w = Work::new();
    let py = debian();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/tests/scripts/cc201_bad.py");
    let script = script.to_str().unwrap();
    let o = output(&mut run_cmd(&w, &["--", &py, script]));
    expect_status(&o, 0);
    let err = stderr(&o);
    assert_eq!(
        err.matches("CC201 pool-without-main-guard").count(),
        3,
        "{err}"
    );
    assert!(err.contains("cc201_bad.py:9:6"), "{err}");
    assert!(
        stdout(&o).contains("[0, 1, 4, 9]"),
        "the script still runs: {}",
        both(&o)
    );
    let o = output(&mut run_cmd(&w, &["--no-lint", "--", &py, script]));
    expect_status(&o, 0);
    assert!(!stderr(&o).contains("CC201"), "{}", both(&o));
    // A script that does not parse: a warning, and Python reports it.
    let bad = w.write("broken.py", "def f(:\n");
    let o = output(&mut run_cmd(&w, &["--", &py, bad.to_str().unwrap()]));
    expect_status(&o, 1);
    assert!(
        stderr(&o).contains("cannot lint the script"),
        "{}",
        both(&o)
    );
    assert!(stderr(&o).contains("SyntaxError"), "{}", both(&o));
}
