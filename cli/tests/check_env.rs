//! `caiclust env --shell ...`: each format is accepted by the binary, and
//! values survive quoting (bash round trip; dotenv parsed back; textual
//! checks for the others).
//!
//! Unix only: the output is evaluated by bash, zsh and conda's shell words.
#![cfg(unix)]

mod check_support;
use check_support::*;

use std::collections::BTreeMap;
use std::process::Command;

use caiclust_cli::envfmt::{render, Shell};
use caiclust_rules::EnvSetting;

fn tricky() -> Vec<EnvSetting> {
    let s = |n: &str, v: &str| EnvSetting {
        name: n.into(),
        value: v.into(),
        reason: format!("why {n}:\nsecond line"),
        ..Default::default()
    };
    vec![
        s("CC_PLAIN", "1"),
        s("CC_QUOTE", "it's \"quoted\""),
        s("CC_SHELL", "$HOME `id` $(id) \\ ; & | * ? ~"),
        s("CC_SPACES", "  a  b  "),
        s("CC_EMPTY", ""),
        s("CC_PERCENT", "50%"),
    ]
}

fn bash_env(script: &str) -> BTreeMap<String, String> {
    let o = Command::new("bash")
        .arg("-c")
        .arg(r#"eval "$CC_SCRIPT" && env -0"#)
        .env("CC_SCRIPT", script)
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv).into_owned();
            let (k, v) = kv.split_once('=')?;
            k.starts_with("CC_").then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn bash_and_zsh_round_trip() {
    for shell in [Shell::Bash, Shell::Zsh] {
        let got = bash_env(&render(shell, &tricky()));
        for e in tricky() {
            assert_eq!(got.get(&e.name), Some(&e.value), "{shell:?} {}", e.name);
        }
    }
}

#[test]
fn binary_output_evals_in_bash() {
    let f = pypi_linux();
    let facts = facts(&f);
    // The values for the interpreter's default start method (fork here):
    // where fork would hang, the environment that makes it safe.
    let advice = caiclust_cli::envfmt::safe_env(
        &facts,
        &caiclust_rules::Config::default(),
        &caiclust_rules::Plan::default(),
    );
    assert_eq!(advice.verdict.start_method, "fork");
    assert!(advice.verdict.safe(), "{:?}", advice.verdict);
    let omp = advice.env.iter().find(|e| e.name == "OMP_NUM_THREADS");
    assert_eq!(omp.map(|e| e.value.as_str()), Some("1"), "CC001's fix");
    assert_eq!(
        omp.map(|e| e.answers.clone()),
        Some(vec!["CC001".to_string()])
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(r#"eval "$("$CC_BIN" env --shell bash --facts "$CC_FACTS")" && env -0"#)
        .env("CC_BIN", CAICLUST)
        .env("CC_FACTS", &f)
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: BTreeMap<String, String> = o
        .stdout
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv).into_owned();
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for e in &advice.env {
        assert_eq!(got.get(&e.name), Some(&e.value), "{}", e.name);
    }
}

#[test]
fn every_shell_is_accepted_by_the_binary() {
    let f = pypi_linux();
    for shell in [
        "bash",
        "zsh",
        "fish",
        "powershell",
        "cmd",
        "dotenv",
        "conda",
        "github",
    ] {
        let o = run(
            CAICLUST,
            &["env", "--shell", shell, "--facts", f.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
    }
    let o = run(CAICLUST, &["env", "--shell", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(CAICLUST, &["env", "--facts", "/nonexistent.json"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A `.env` reader for what we write: `#` comments, `K=v`, `K="..."` with
/// backslash escapes.
fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').expect("K=v");
        let v = if let Some(inner) = v.strip_prefix('"') {
            let inner = inner.strip_suffix('"').expect("closing quote");
            let mut s = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('r') => s.push('\r'),
                        Some(c) => s.push(c),
                        None => panic!("dangling backslash"),
                    }
                } else {
                    assert!(c != '"', "unescaped quote in {line}");
                    s.push(c);
                }
            }
            s
        } else {
            assert!(
                !v.contains([' ', '"', '\'', '$', '#']),
                "unquoted special in {line}"
            );
            v.to_string()
        };
        out.insert(k.to_string(), v);
    }
    out
}

#[test]
fn dotenv_parses_back() {
    let mut env = tricky();
    env.push(EnvSetting {
        name: "CC_NEWLINE".into(),
        value: "a\nb".into(),
        reason: "r".into(),
        ..Default::default()
    });
    let got = parse_dotenv(&render(Shell::Dotenv, &env));
    for e in &env {
        assert_eq!(got.get(&e.name), Some(&e.value), "{}", e.name);
    }
}

#[test]
fn textual_forms() {
    let env = tricky();
    let fish = render(Shell::Fish, &env);
    assert!(
        fish.contains("# why CC_PLAIN:\n# second line\nset -gx CC_PLAIN '1'\n"),
        "{fish}"
    );
    assert!(
        fish.contains(r#"set -gx CC_QUOTE 'it\'s "quoted"'"#),
        "{fish}"
    );
    assert!(
        fish.contains(r"set -gx CC_SHELL '$HOME `id` $(id) \\ ; & | * ? ~'"),
        "{fish}"
    );
    let ps = render(Shell::Powershell, &env);
    assert!(ps.contains(r#"$env:CC_QUOTE = 'it''s "quoted"'"#), "{ps}");
    assert!(ps.contains("$env:CC_EMPTY = ''"), "{ps}");
    let cmd = render(Shell::Cmd, &env);
    assert!(
        cmd.contains("rem why CC_PLAIN:\nrem second line\nset \"CC_PLAIN=1\"\n"),
        "{cmd}"
    );
    let conda = render(Shell::Conda, &env);
    let commands: Vec<&str> = conda.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(commands.len(), 1, "{conda}");
    assert!(
        commands[0]
            .starts_with("conda env config vars set CC_PLAIN=1 'CC_QUOTE=it'\\''s \"quoted\"'"),
        "{conda}"
    );
}

#[test]
fn conda_command_words_round_trip() {
    let conda = render(Shell::Conda, &tricky());
    let cmd = conda.lines().find(|l| !l.starts_with('#')).unwrap();
    let args = cmd.strip_prefix("conda env config vars set ").unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("printf '%s\\0' {args}"))
        .output()
        .unwrap();
    let words: Vec<String> = o
        .stdout
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let want: Vec<String> = tricky()
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    assert_eq!(words, want);
}

#[test]
fn github_env_file_lines() {
    let mut env = tricky();
    env.push(EnvSetting {
        name: "CC_NEWLINE".into(),
        value: "a\nb".into(),
        reason: "r".into(),
        ..Default::default()
    });
    let text = render(Shell::Github, &env);
    assert!(
        !text.lines().any(|l| l.starts_with('#')),
        "no comments in $GITHUB_ENV: {text}"
    );
    assert!(text.contains("CC_PLAIN=1\n"), "{text}");
    assert!(
        text.contains("CC_NEWLINE<<CAICLUST_EOF\na\nb\nCAICLUST_EOF\n"),
        "{text}"
    );
}
