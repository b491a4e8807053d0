//! What CC205 claims, checked against a real interpreter (Debian's
//! `python3`, from the fixtures): the fixture notebooks run the way a
//! Jupyter kernel runs them (each code cell executed in a `__main__` that
//! is not a file), and the guarded script runs as a script. Where CC205
//! reports a task function, the spawn workers really fail with `Can't get
//! attribute`; where it reports nothing, the work completes.
//!
//! Unix only: runs Debian's Linux `python3` from the fixtures, in its own process group.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caiclust_rules::lint_script_file;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

/// Runs each code cell of a notebook in `__main__`, as a kernel does
/// (`python -c`: `__main__` has no file, so spawn workers cannot import
/// it). IPython syntax is not used in the fixtures run here.
const KERNEL: &str = r#"
import json, sys
nb = json.load(open(sys.argv[1], encoding="utf-8"))
for cell in nb["cells"]:
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), "<cell>", "exec"), globals())
"#;

struct Run {
    /// `None` when it had to be killed.
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Run `args` with the fixture interpreter in the fixtures' folder (so
/// that `tasks.py` is importable), killing its process group at `timeout`.
fn run(args: &[&str], timeout: Duration) -> Run {
    let python = caiclust_tests::fixtures().debian_python;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut child = Command::new(&python)
        .args(args)
        .current_dir(fixture(""))
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > timeout {
            // The whole group: the parent and its workers.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

use std::os::unix::process::CommandExt;

fn cc205(name: &str) -> Vec<String> {
    lint_script_file(&fixture(name), None)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|f| f.rule_id == "CC205")
        .map(|f| f.message)
        .collect()
}

#[test]
fn a_notebook_function_sent_to_spawn_workers_fails_as_cc205_says() {
    let found = cc205("cc205_bad.ipynb");
    assert!(
        found[0].starts_with("`work` is defined in this notebook"),
        "{found:#?}"
    );
    let nb = fixture("cc205_bad.ipynb");
    let r = run(
        &["-c", KERNEL, nb.to_str().unwrap()],
        Duration::from_secs(60),
    );
    let status = r.status.expect("the executor fails, it does not hang");
    assert!(!status.success(), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("Can't get attribute 'work' on <module '__main__'"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("BrokenProcessPool"), "{}", r.stderr);
}

#[test]
fn an_imported_task_function_works_and_cc205_is_silent() {
    assert_eq!(cc205("cc205_safe.ipynb"), Vec::<String>::new());
    let nb = fixture("cc205_safe.ipynb");
    let r = run(
        &["-c", KERNEL, nb.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(
        r.status.is_some_and(|s| s.success()),
        "{:?}\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "9\n");

    assert_eq!(cc205("cc205_safe.py"), Vec::<String>::new());
    let r = run(&["cc205_safe.py"], Duration::from_secs(60));
    assert!(
        r.status.is_some_and(|s| s.success()),
        "{:?}\n{}",
        r.status,
        r.stderr
    );
    assert_eq!(r.stdout, "[0, 1, 4, 9]\n9\n");
}

/// A function defined under the guard: the workers re-import the script
/// as `__mp_main__` without it, and the Pool waits forever.
#[test]
fn a_guarded_function_sent_to_spawn_workers_hangs_the_pool_as_cc205_says() {
    let found = cc205("cc205_bad.py");
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("<module '__mp_main__'>"), "{}", found[0]);
    let r = run(&["cc205_bad.py"], Duration::from_secs(15));
    assert!(
        r.status.is_none(),
        "expected the pool to hang: {:?}\n{}",
        r.status,
        r.stderr
    );
    assert!(
        r.stderr
            .contains("Can't get attribute 'work' on <module '__mp_main__'"),
        "{}",
        r.stderr
    );
}
