//! `caiclust map` against GNU parallel, the oracle: the same inputs and
//! replacement strings give the same output; the job log has GNU
//! parallel's layout and values; input from files, standard input, NUL
//! separated; `--tag`; commands as inputs.
//!
//! Unix only: `sh` commands, compared with GNU parallel.
#![cfg(unix)]

mod map_support;
use map_support::*;

/// Inputs that exercise GNU parallel's replacement strings and quoting.
const TRICKY: &[&str] = &[
    ".bashrc",
    "a/b.tar.gz",
    "dir.x/file",
    "/abs/f.txt",
    "f.",
    "./x.y",
    "sp ace.t",
    "a/b/",
    "/",
    "",
    "a//b.c",
    "//x",
    "it's \"q\"",
    "$HOME",
    "*",
    "x;y|z",
];

fn args_with(prefix: &[&str], inputs: &[&str]) -> Vec<String> {
    prefix
        .iter()
        .chain(inputs.iter())
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn replacement_strings_match_gnu_parallel() {
    let w = Work::new();
    let template = [
        "echo", "{}", "::", "{.}", "::", "{/}", "::", "{//}", "::", "{/.}", "::", "{#}",
    ];
    let mut ours = vec!["map", "--no-auto", "-j", "3", "-k", "--"];
    ours.extend(template);
    ours.push(":::");
    let ours = args_with(&ours, TRICKY);
    let mut gnu = vec!["-k", "-j", "3"];
    gnu.extend(template);
    gnu.push(":::");
    let gnu = args_with(&gnu, TRICKY);
    let a = output(&mut w.caiclust(&strs(&ours)));
    let b = output(&mut w.parallel(&strs(&gnu)));
    expect_status(&a, 0);
    assert!(b.status.success(), "{}", both(&b));
    assert_eq!(
        stdout(&a),
        stdout(&b),
        "ours:\n{}\nGNU:\n{}",
        both(&a),
        both(&b)
    );
    assert_eq!(stdout(&a).lines().count(), TRICKY.len());
}

#[test]
fn shell_mode_quotes_inputs_like_gnu_parallel() {
    // With --shell the command is a shell line, as GNU parallel's always
    // is: pipes work, inputs are quoted where substituted.
    let w = Work::new();
    let line = "echo {} | tr a-z A-Z; echo {/.}";
    let a = output(&mut w.caiclust(&strs(&args_with(
        &["map", "--no-auto", "-k", "--shell", line, ":::"],
        TRICKY,
    ))));
    let b = output(&mut w.parallel(&strs(&args_with(&["-k", line, ":::"], TRICKY))));
    expect_status(&a, 0);
    assert_eq!(
        stdout(&a),
        stdout(&b),
        "ours:\n{}\nGNU:\n{}",
        both(&a),
        both(&b)
    );
}

#[test]
fn several_sources_combine_and_link_like_gnu_parallel() {
    let w = Work::new();
    w.write("letters", "x.1\ny.2\n");
    for tail in [
        // Every combination, first source slowest; positions and counts.
        &[
            "echo", "{2}", "{1.}", "{-1}", "{#}", ":::", "a.q", "b.r", "c", ":::", "1", "2",
        ][..],
        // No replacement string: all inputs appended.
        &[
            "echo", "-", ":::", "a", "b", ":::", "1", "2", "::::", "letters",
        ][..],
        // :::+ pairs with the source before it, as long as both last.
        &[
            "echo", ":::", "a", "b", "c", ":::+", "1", "2", ":::", "X", "Y",
        ][..],
        // {} with several sources: all of them.
        &["echo", "[{}]", ":::", "a", "b", ":::", "1 2"][..],
    ] {
        let mut ours = vec!["map", "--no-auto", "-k", "--"];
        ours.extend_from_slice(tail);
        let mut gnu = vec!["-k"];
        gnu.extend_from_slice(tail);
        let a = output(&mut w.caiclust(&ours));
        let b = output(&mut w.parallel(&gnu));
        expect_status(&a, 0);
        assert!(b.status.success(), "{}", both(&b));
        assert_eq!(
            stdout(&a),
            stdout(&b),
            "{tail:?}\nours:\n{}\nGNU:\n{}",
            both(&a),
            both(&b)
        );
    }
}

#[test]
fn tag_and_inputs_as_commands_match_gnu_parallel() {
    let w = Work::new();
    let tail = [
        "--tag", "-k", "echo", "out", ":::", "a b", "c", ":::", "1", "2",
    ];
    let mut ours = vec!["map", "--no-auto"];
    ours.extend(tail);
    let a = output(&mut w.caiclust(&ours));
    let b = output(&mut w.parallel(&tail));
    expect_status(&a, 0);
    assert_eq!(stdout(&a), stdout(&b));
    assert!(
        stdout(&a).starts_with("a b 1\tout a b 1\n"),
        "{}",
        stdout(&a)
    );

    // No command: each input is a command line.
    let tail = [
        "-k",
        ":::",
        "echo one; echo two",
        "printf '%s\\n' three",
        "echo 'a  b'",
    ];
    let mut ours = vec!["map", "--no-auto"];
    ours.extend(tail);
    let a = output(&mut w.caiclust(&ours));
    let b = output(&mut w.parallel(&tail));
    expect_status(&a, 0);
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(stdout(&a), "one\ntwo\nthree\na  b\n");
}

#[test]
fn inputs_from_stdin_files_and_nul_separated() {
    let w = Work::new();
    // Standard input when no source is given, a line each, empty lines
    // included (as GNU parallel).
    let input = b"alpha\n\nbeta gamma\n";
    let a = output_with_stdin(
        &mut w.caiclust(&["map", "--no-auto", "-k", "echo", "[{}]"]),
        input,
    );
    let b = output_with_stdin(&mut w.parallel(&["-k", "echo", "[{}]"]), input);
    expect_status(&a, 0);
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(stdout(&a), "[alpha]\n[]\n[beta gamma]\n");

    // -a FILE and :::: - (standard input) combine.
    w.write("one", "1\n2\n");
    let a = output_with_stdin(
        &mut w.caiclust(&["map", "--no-auto", "-k", "-a", "one", "echo", "::::", "-"]),
        b"x\ny\n",
    );
    expect_status(&a, 0);
    assert_eq!(stdout(&a), "1 x\n1 y\n2 x\n2 y\n");

    // NUL-separated, as from find -print0: newlines stay in the value.
    let a = output_with_stdin(
        &mut w.caiclust(&["map", "--no-auto", "-k", "-0", "printf", "[%s]"]),
        b"a\nb\0c d\0",
    );
    let b = output_with_stdin(
        &mut w.parallel(&["-k", "-0", "printf", "[%s]"]),
        b"a\nb\0c d\0",
    );
    expect_status(&a, 0);
    assert_eq!(stdout(&a), "[a\nb][c d]");
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn joblog_has_gnu_parallels_layout_and_values() {
    let w = Work::new();
    // The same shell lines through both: exit codes, a signal, output
    // sizes, a timeout.
    let line = "printf %s {}; case {} in fail) exit 3;; kill) kill -9 $$;; slow) sleep 5;; esac";
    let inputs = ["ok", "fail", "kill", "slow", "0123456789"];
    let mut ours = vec![
        "map",
        "--no-auto",
        "-j",
        "5",
        "--timeout",
        "1",
        "--joblog",
        "ours.log",
        "--shell",
        line,
        ":::",
    ];
    ours.extend(inputs);
    let mut gnu = vec![
        "-j",
        "5",
        "--timeout",
        "1",
        "--joblog",
        "gnu.log",
        line,
        ":::",
    ];
    gnu.extend(inputs);
    let a = output(&mut w.caiclust(&ours));
    let b = output(&mut w.parallel(&gnu));
    // Three failed: exit status 3, in both.
    expect_status(&a, 3);
    assert_eq!(b.status.code(), Some(3), "{}", both(&b));
    let mut ours = joblog_rows(&w.read("ours.log"));
    let mut gnu = joblog_rows(&w.read("gnu.log"));
    ours.sort_by_key(|r| r[0].parse::<u64>().unwrap());
    gnu.sort_by_key(|r| r[0].parse::<u64>().unwrap());
    assert_eq!(ours.len(), 5);
    for (o, g) in ours.iter().zip(&gnu) {
        // Seq, Host, Send, Receive, Exitval, Signal, Command are equal.
        for i in [0, 1, 4, 5, 6, 7, 8] {
            assert_eq!(o[i], g[i], "field {i}\nours {o:?}\nGNU  {g:?}");
        }
        // Times: 3 decimals; the run time right-aligned in 10 columns.
        for (field, width) in [(&o[2], None), (&o[3], Some(10))] {
            let (int, frac) = field.trim_start().split_once('.').expect("decimal point");
            assert!(int.chars().all(|c| c.is_ascii_digit()), "{field:?}");
            assert_eq!(frac.len(), 3, "{field:?}");
            if let Some(wd) = width {
                assert_eq!(field.len(), wd, "{field:?}");
            }
        }
        let start: f64 = o[2].parse().unwrap();
        let gnu_start: f64 = g[2].parse().unwrap();
        assert!(
            (start - gnu_start).abs() < 120.0,
            "epoch seconds: {start} vs {gnu_start}"
        );
    }
    // The values themselves, for the record.
    let status: Vec<(&str, &str, &str)> = ours
        .iter()
        .map(|r| (r[5].as_str(), r[6].as_str(), r[7].as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("2", "0", "0"),
            ("4", "3", "0"),
            ("4", "0", "9"),
            ("4", "-1", "15"),
            ("10", "0", "0")
        ]
    );
    // The timeout is reported with its reason.
    assert!(
        stderr(&a).contains("job 4 timed out after 1.0 s"),
        "{}",
        both(&a)
    );
    assert!(
        stderr(&a).contains("job 3 was killed by signal 9 (SIGKILL)"),
        "{}",
        both(&a)
    );
}

#[test]
fn dry_run_prints_the_commands() {
    let w = Work::new();
    let a = output(&mut w.caiclust(&[
        "map",
        "--no-auto",
        "--dry-run",
        "convert",
        "{}",
        "{.}.png",
        ":::",
        "a b.tif",
        "c.tif",
    ]));
    expect_status(&a, 0);
    assert_eq!(
        stdout(&a),
        "convert 'a b.tif' 'a b.png'\nconvert c.tif c.png\n"
    );
}
