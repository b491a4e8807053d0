//! `caiclust map` running jobs: exit statuses as GNU parallel, halt
//! policies, timeouts (fixed and relative) with their reason, retries,
//! `--keep-order`, `{%}` slots, huge outputs, the recommended environment,
//! the progress bar, and bad input that must give a clear error (exit 255)
//! and never a panic.
//!
//! Unix only: `sh` commands and the fixture venvs' Linux Pythons.
#![cfg(unix)]

mod map_support;
use map_support::*;

use std::time::{Duration, Instant};

fn map(w: &Work, args: &[&str]) -> std::process::Output {
    let mut v = vec!["map", "--no-auto"];
    v.extend_from_slice(args);
    output(&mut w.caiclust(&v))
}

#[test]
fn exit_status_counts_failures_like_gnu_parallel() {
    let w = Work::new();
    let o = map(&w, &["-j", "2", "true", ":::", "a", "b"]);
    expect_status(&o, 0);
    assert_eq!(stderr(&o), "", "silent when all succeed");
    let o = map(
        &w,
        &[
            "-j", "2", "sh", "-c", "exit $0", ":::", "0", "1", "2", "0", "3",
        ],
    );
    expect_status(&o, 3);
    assert!(
        stderr(&o).contains("5 jobs: 2 succeeded, 3 failed"),
        "{}",
        both(&o)
    );
    // More than 100 failures: 101, as GNU parallel.
    let inputs = numbers(103);
    let mut args = vec!["-j", "4", "false", ":::"];
    args.extend(strs(&inputs));
    let o = map(&w, &args);
    expect_status(&o, 101);
    let mut gnu = vec!["-j", "4", "false", ":::"];
    gnu.extend(strs(&inputs));
    assert_eq!(output(&mut w.parallel(&gnu)).status.code(), Some(101));
}

#[test]
fn halt_now_stops_running_jobs_and_soon_waits_for_them() {
    let w = Work::new();
    // Job 1 fails after 0.5 s (job 2 has surely started by then, in
    // GNU parallel too, even on a loaded machine); job 2 would finish after
    // 2 s; job 3 waits.
    let line =
        "echo {} >> started; if [ {} = 1 ]; then sleep 0.5; exit 7; fi; sleep 2; echo {} >> done";
    for (policy, want_done, want_log) in [
        ("now,fail=1", vec![], vec![1u64]),
        ("soon,fail=1", vec!["2".to_string()], vec![1, 2]),
    ] {
        let _ = std::fs::remove_file(w.path("done"));
        let _ = std::fs::remove_file(w.path("started"));
        let o = map(
            &w,
            &[
                "-j", "2", "--halt", policy, "--joblog", "ours.log", "--shell", line, ":::", "1",
                "2", "3",
            ],
        );
        // fail=1: the exit status is the failed job's, as GNU parallel.
        expect_status(&o, 7);
        assert!(
            stderr(&o).contains(&format!("halting (--halt {policy})")),
            "{}",
            both(&o)
        );
        assert_eq!(sorted_lines(&w.read("done")), want_done, "{policy}");
        assert!(
            !w.read("started").contains('3'),
            "{policy}: job 3 never starts"
        );
        assert_eq!(joblog_seqs(&w.read("ours.log")), want_log, "{policy}");
        // GNU parallel logs the same jobs.
        let g = output(&mut w.parallel(&[
            "-j", "2", "--halt", policy, "--joblog", "gnu.log", line, ":::", "1", "2", "3",
        ]));
        assert_eq!(g.status.code(), Some(7), "{}", both(&g));
        assert_eq!(
            joblog_seqs(&w.read("gnu.log")),
            want_log,
            "GNU parallel, {policy}"
        );
    }
}

#[test]
fn halt_on_a_percentage_exits_with_it() {
    let w = Work::new();
    // 2 of 6 fail: 33.3%, rounded up as GNU parallel does.
    for policy in ["soon,fail=30%", "soon,fail=50%"] {
        let inputs = ["1", "0", "1", "0", "0", "0"];
        let mut ours = vec![
            "-j", "1", "--halt", policy, "--joblog", "ours.log", "--shell", "exit {}", ":::",
        ];
        ours.extend(inputs);
        let mut gnu = vec![
            "-j", "1", "--halt", policy, "--joblog", "gnu.log", "exit {}", ":::",
        ];
        gnu.extend(inputs);
        let o = map(&w, &ours);
        let g = output(&mut w.parallel(&gnu));
        assert_eq!(
            o.status.code(),
            g.status.code(),
            "{policy}\n{}\n{}",
            both(&o),
            both(&g)
        );
        assert_eq!(
            joblog_seqs(&w.read("ours.log")),
            joblog_seqs(&w.read("gnu.log")),
            "{policy}"
        );
    }
    let o = map(
        &w,
        &[
            "-j",
            "1",
            "--halt",
            "soon,fail=30%",
            "--shell",
            "exit {}",
            ":::",
            "1",
            "0",
            "1",
            "0",
            "0",
            "0",
        ],
    );
    expect_status(&o, 34);
    let o = map(&w, &["--halt", "now,success=1", "true", ":::", "a", "b"]);
    expect_status(&o, 0);
}

#[test]
fn timeouts_stop_the_job_and_say_so() {
    let w = Work::new();
    let t0 = Instant::now();
    let o = map(
        &w,
        &[
            "-j",
            "2",
            "--timeout",
            "0.5",
            "--joblog",
            "t.log",
            "sleep",
            ":::",
            "30",
            "0.1",
        ],
    );
    expect_status(&o, 1);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        stderr(&o).contains(
            "job 1 timed out after 0.5 s and was stopped with its child processes: sleep 30"
        ),
        "{}",
        both(&o)
    );
    let rows = joblog_rows(&w.read("t.log"));
    let timed_out: Vec<_> = rows.iter().filter(|r| r[0] == "1").collect();
    assert_eq!(
        (timed_out[0][6].as_str(), timed_out[0][7].as_str()),
        ("-1", "15")
    );

    // A percentage of the median successful run time: the slow last job
    // is stopped long before it would end.
    let t0 = Instant::now();
    let o = map(
        &w,
        &[
            "-j",
            "1",
            "--timeout",
            "400%",
            "sleep",
            ":::",
            "0.2",
            "0.2",
            "0.2",
            "30",
        ],
    );
    expect_status(&o, 1);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // 400% of a median of about 0.2 s.
    let err = stderr(&o);
    let after: f64 = err
        .split("job 4 timed out after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no timeout for job 4:\n{}", both(&o)));
    assert!((0.8..3.0).contains(&after), "{after}");
}

#[test]
fn retries_are_total_attempts() {
    let w = Work::new();
    // Fails twice, then succeeds: three attempts are enough.
    let line = "echo {} >> tries; [ $(wc -l < tries) -ge 3 ]";
    let o = map(&w, &["--retries", "3", "--shell", line, ":::", "a"]);
    expect_status(&o, 0);
    assert_eq!(w.read("tries").lines().count(), 3);
    // Always failing: three attempts, reported with the earlier ones.
    let o = map(&w, &["--retries", "3", "sh", "-c", "exit 4", ":::", "a"]);
    expect_status(&o, 1);
    assert!(
        stderr(&o).contains("job 1 failed with exit code 4 (attempt 3; before: failed with exit code 4; failed with exit code 4)"),
        "{}",
        both(&o)
    );
}

#[test]
fn keep_order_prints_in_input_order() {
    let w = Work::new();
    let line = "sleep {}; echo {}";
    let o = map(
        &w,
        &["-j", "3", "-k", "--shell", line, ":::", "1.2", "0.6", "0"],
    );
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "1.2\n0.6\n0\n");
    let o = map(&w, &["-j", "3", "--shell", line, ":::", "1.2", "0.6", "0"]);
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "0\n0.6\n1.2\n", "completion order without -k");
}

#[test]
fn output_is_grouped_per_job_and_huge_output_streams_whole() {
    let w = Work::new();
    // Two jobs interleave their lines; the output is grouped.
    let line = "for i in 1 2 3; do echo {}$i; echo e{}$i >&2; sleep 0.1; done";
    let o = map(&w, &["-j", "2", "--shell", line, ":::", "a", "b"]);
    expect_status(&o, 0);
    let out = stdout(&o);
    assert!(
        out == "a1\na2\na3\nb1\nb2\nb3\n" || out == "b1\nb2\nb3\na1\na2\na3\n",
        "{out}"
    );
    assert!(stderr(&o).contains("ea1\nea2\nea3\n"), "{}", both(&o));

    // 12 MiB from one job (above the core's 4 MiB in memory): every byte
    // arrives, and the job log counts them.
    let o = map(
        &w,
        &[
            "--joblog",
            "big.log",
            "--shell",
            "head -c {} /dev/zero",
            ":::",
            "12582912",
        ],
    );
    expect_status(&o, 0);
    assert_eq!(o.stdout.len(), 12_582_912);
    assert!(o.stdout.iter().all(|&b| b == 0));
    assert_eq!(joblog_rows(&w.read("big.log"))[0][5], "12582912");
}

#[test]
fn slots_are_unique_among_running_jobs() {
    let w = Work::new();
    // A job that finds its slot's lock taken fails: two running jobs with
    // the same {%} would show.
    let line = "mkdir lock.{%} || exit 9; echo {%} >> slots; sleep 0.2; rmdir lock.{%}";
    let inputs = numbers(9);
    let mut args = vec!["-j", "3", "--shell", line, ":::"];
    args.extend(strs(&inputs));
    let o = map(&w, &args);
    expect_status(&o, 0);
    let slots = sorted_lines(&w.read("slots"));
    assert_eq!(slots.len(), 9);
    assert!(
        slots.iter().all(|s| ["1", "2", "3"].contains(&s.as_str())),
        "{slots:?}"
    );
    assert!(
        slots.iter().any(|s| s == "3"),
        "all three slots used: {slots:?}"
    );
}

#[test]
fn jobs_get_the_recommended_environment() {
    let w = Work::new();
    let fx = caiclust_tests::fixtures();
    let want = recommended_env(&fx.debian_python);
    assert!(
        !want.is_empty(),
        "Debian numpy has OpenBLAS: some variable is recommended"
    );
    let (name, value) = &want[0];
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        fx.debian_python.to_str().unwrap(),
        "-v",
        "--shell",
        &format!("echo ${name} # {{}}"),
        ":::",
        "a",
    ]));
    expect_status(&o, 0);
    assert_eq!(stdout(&o), format!("{value}\n"));
    assert!(
        stderr(&o).contains(&format!("{name}={value}")),
        "-v says so: {}",
        both(&o)
    );
    // --env wins over the recommendation.
    let o = output(&mut w.caiclust(&[
        "map",
        "--python",
        fx.debian_python.to_str().unwrap(),
        "--env",
        &format!("{name}=17"),
        "--shell",
        &format!("echo ${name} # {{}}"),
        ":::",
        "a",
    ]));
    expect_status(&o, 0);
    assert_eq!(stdout(&o), "17\n");
}

#[test]
fn forced_bar_writes_progress_lines_with_an_eta() {
    let w = Work::new();
    let o = map(
        &w,
        &[
            "--bar", "-j", "2", "sleep", ":::", "0.3", "0.3", "0.3", "0.3",
        ],
    );
    expect_status(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains("caiclust: progress ") && err.contains("ETA"),
        "{err}"
    );
    assert!(err.contains("4 jobs: 4 succeeded, 0 failed"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no control codes outside a terminal: {err:?}"
    );
}

#[test]
fn programs_that_cannot_start_read_as_127() {
    let w = Work::new();
    let o = map(
        &w,
        &["--joblog", "n.log", "no-such-program-xyz", ":::", "a"],
    );
    expect_status(&o, 1);
    assert!(
        stderr(&o).contains("job 1 could not start: no-such-program-xyz"),
        "{}",
        both(&o)
    );
    assert_eq!(joblog_rows(&w.read("n.log"))[0][6], "127");
    // A file that is there but cannot run reads as 126, as in a shell
    // (and in GNU parallel's job log).
    let plain = w.write("plain.sh", "echo hi\n");
    let o = map(
        &w,
        &["--joblog", "x.log", plain.to_str().unwrap(), ":::", "a"],
    );
    expect_status(&o, 1);
    assert_eq!(joblog_rows(&w.read("x.log"))[0][6], "126", "{}", both(&o));
    let gnu = w
        .parallel(&["--joblog", "gnu.log", plain.to_str().unwrap(), ":::", "a"])
        .output()
        .expect("GNU parallel");
    assert!(!gnu.status.success());
    assert_eq!(
        joblog_rows(&w.read("gnu.log"))[0][6],
        "126",
        "GNU parallel agrees"
    );
    // A command line in one word hints at --shell.
    let o = map(&w, &["echo {} > out", ":::", "a"]);
    expect_status(&o, 1);
    assert!(stderr(&o).contains("use --shell"), "{}", both(&o));
}

#[test]
fn bad_input_is_a_clear_error() {
    let w = Work::new();
    w.write(
        "bad.log",
        "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n1\t:\t1.0\t1.0\t0\t0\t0\t0\ttrue\n2\t:\tlater\t1.0\t0\t0\t0\t0\ttrue\n",
    );
    w.write("notjson", "[1, 2]\n{oops\n");
    std::fs::write(w.path("latin1"), b"ok\ncaf\xe9\n").unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["echo", "::::", "missing.txt"],
            &["missing.txt", "No such file"],
        ),
        (&["-a", "missing.txt", "echo"], &["missing.txt"]),
        (
            &["--resume", "--joblog", "bad.log", "true", ":::", "a"],
            &["bad.log:3", "Starttime", "later"],
        ),
        (
            &["--halt", "sometimes", "true", ":::", "a"],
            &["--halt", "sometimes"],
        ),
        (
            &["--timeout", "soon", "true", ":::", "a"],
            &["--timeout", "soon"],
        ),
        (&["-j", "0", "true", ":::", "a"], &["-j"]),
        (&["--resume", "true", ":::", "a"], &["--joblog"]),
        (&["--bogus", "true", ":::", "a"], &["--bogus"]),
        (
            &["echo", "{3}", ":::", "a", ":::", "b"],
            &["{3}", "there are 2"],
        ),
        (&["echo", ":::+", "a"], &[":::+"]),
        (
            &["-f", "tasks:f", "--json-args", "::::", "notjson"],
            &["notjson:2", "not JSON"],
        ),
        (&["-f", "not a function", ":::", "a"], &["not a function"]),
        (&["echo", "::::", "latin1"], &["latin1:2", "UTF-8"]),
        (&["--env", "NOEQUALS", "true", ":::", "a"], &["NOEQUALS"]),
    ];
    for (args, needles) in cases {
        let o = map(&w, args);
        expect_status(&o, 255);
        let err = stderr(&o);
        for n in *needles {
            assert!(err.contains(n), "{args:?}: wanted {n:?} in:\n{err}");
        }
    }
    // Nothing ran, and the bad job log is untouched.
    assert!(w.read("bad.log").contains("later"));
}
