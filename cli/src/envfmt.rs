//! `caiclust env --shell ...`: the recommended environment
//! ([`caiclust_rules::Recommendation::env`]) written for a shell or file,
//! values quoted so that they arrive unchanged. Formats that allow
//! comments get each variable's reason above it.

use std::fmt::Write as _;

use caiclust_core::probe::Facts;
use caiclust_rules::{assess, recommend, Config, EnvSetting, Plan, Recommendation};

/// Where the settings go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Shell {
    /// `export K='v'`, for `eval "$(caiclust env)"`.
    #[default]
    Bash,
    /// As bash.
    Zsh,
    /// `set -gx K 'v'`.
    Fish,
    /// `$env:K = 'v'`.
    Powershell,
    /// `set "K=v"` (Windows cmd.exe).
    Cmd,
    /// `K=v` lines of a `.env` file.
    Dotenv,
    /// One `conda env config vars set K=v ...` command.
    Conda,
    /// `K=v` lines to append to `$GITHUB_ENV`.
    Github,
}

/// POSIX shell single-quoting: `'it'\''s'`.
pub fn posix_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// POSIX quoting only when needed (plain words stay as they are).
fn posix_word(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:,+=@%".contains(c));
    if plain {
        v.to_string()
    } else {
        posix_quote(v)
    }
}

/// fish single quotes: only `\` and `'` are escaped.
fn fish_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', r"\\").replace('\'', r"\'"))
}

/// PowerShell single quotes: `'` doubles.
fn powershell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// A `.env` value: bare when safe, else double-quoted with escapes.
fn dotenv_value(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./:,+@%".contains(c));
    if plain {
        return v.to_string();
    }
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '\\' => s.push_str(r"\\"),
            '"' => s.push_str("\\\""),
            '$' => s.push_str("\\$"),
            '`' => s.push_str("\\`"),
            '\n' => s.push_str(r"\n"),
            '\r' => s.push_str(r"\r"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn comment(out: &mut String, prefix: &str, text: &str) {
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(out, "{prefix} {l}");
    }
}

/// A heredoc delimiter that does not occur in `value`.
fn delimiter(value: &str) -> String {
    let mut d = String::from("CAICLUST_EOF");
    let mut n = 0u32;
    while value.lines().any(|l| l == d) {
        n += 1;
        d = format!("CAICLUST_EOF_{n}");
    }
    d
}

/// The recommendation whose variables are safe under the start method
/// the workers will really use: the plan's, else the configured one, else
/// the interpreter's default (`eval "$(caiclust env)"` cannot change the
/// start method; where that method has a hazard, the variables include
/// the environment that removes it).
pub fn safe_env(facts: &Facts, config: &Config, plan: &Plan) -> Recommendation {
    let natural = assess(facts, plan, config);
    let mut advice = recommend(
        facts,
        &Config {
            start_method: Some(natural.start_method),
            workers: plan.workers.or(config.workers),
            ..config.clone()
        },
    );
    // The method is the workers' own, not one caiclust chose.
    advice.verdict.start_method_source = natural.start_method_source;
    advice
}

/// The comment line that says which start method the values assume, and
/// whether they make it safe.
pub fn assumption(advice: &Recommendation) -> String {
    let v = &advice.verdict;
    let mut s = if advice.backend.value == caiclust_core::rules::Backend::Ipyparallel {
        format!(
            "caiclust env: for {} ipyparallel engine(s) × {} thread(s) ({}; {})",
            advice.workers.value,
            advice.threads_per_worker.value,
            advice.backend.reason,
            advice.workers.reason
        )
    } else {
        format!(
            "caiclust env: for workers started with {} ({}), {} worker(s) × {} thread(s)",
            v.start_method,
            v.start_method_source,
            advice.workers.value,
            advice.threads_per_worker.value
        )
    };
    let fixed: Vec<String> = advice
        .env
        .iter()
        .filter(|e| !e.answers.is_empty())
        .map(|e| format!("{}={} ({})", e.name, e.value, e.answers.join(", ")))
        .collect();
    if !fixed.is_empty() {
        s.push_str(&format!(
            "; {} {} safe with {}",
            fixed.join(" "),
            if fixed.len() == 1 { "makes" } else { "make" },
            v.start_method
        ));
    }
    if !v.safe() {
        s.push_str(&format!("; still unsafe: {}", v.summary()));
    } else if let Some(m) = v
        .safe_start_methods
        .first()
        .filter(|m| **m != v.start_method)
    {
        s.push_str(&format!(" (start method {m} would need no fix)"));
    }
    s
}

/// `text` as a comment for `shell` (nothing for GitHub's env files, which
/// have no comments).
pub fn header(shell: Shell, text: &str) -> String {
    let mut out = String::new();
    match shell {
        Shell::Github => {}
        Shell::Cmd => comment(&mut out, "rem", text),
        _ => comment(&mut out, "#", text),
    }
    out
}

/// Render `env` for `shell`.
pub fn render(shell: Shell, env: &[EnvSetting]) -> String {
    let mut out = String::new();
    match shell {
        Shell::Bash | Shell::Zsh => {
            for e in env {
                comment(&mut out, "#", &e.reason);
                let _ = writeln!(out, "export {}={}", e.name, posix_quote(&e.value));
            }
        }
        Shell::Fish => {
            for e in env {
                comment(&mut out, "#", &e.reason);
                let _ = writeln!(out, "set -gx {} {}", e.name, fish_quote(&e.value));
            }
        }
        Shell::Powershell => {
            for e in env {
                comment(&mut out, "#", &e.reason);
                let _ = writeln!(out, "$env:{} = {}", e.name, powershell_quote(&e.value));
            }
        }
        Shell::Cmd => {
            for e in env {
                comment(&mut out, "rem", &e.reason);
                let _ = writeln!(
                    out,
                    "set \"{}={}\"",
                    e.name,
                    e.value.replace(['\r', '\n'], " ")
                );
            }
        }
        Shell::Dotenv => {
            for e in env {
                comment(&mut out, "#", &e.reason);
                let _ = writeln!(out, "{}={}", e.name, dotenv_value(&e.value));
            }
        }
        Shell::Conda => {
            if !env.is_empty() {
                for e in env {
                    comment(&mut out, "#", &format!("{}: {}", e.name, e.reason));
                }
                out.push_str("conda env config vars set");
                for e in env {
                    let _ = write!(out, " {}", posix_word(&format!("{}={}", e.name, e.value)));
                }
                out.push('\n');
            }
        }
        Shell::Github => {
            for e in env {
                if e.value.contains(['\n', '\r']) {
                    let d = delimiter(&e.value);
                    let _ = writeln!(out, "{}<<{d}\n{}\n{d}", e.name, e.value);
                } else {
                    let _ = writeln!(out, "{}={}", e.name, e.value);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, value: &str) -> EnvSetting {
        EnvSetting {
            name: name.into(),
            value: value.into(),
            reason: "because".into(),
            ..Default::default()
        }
    }

    #[test]
    fn quoting() {
        let env = [s("A", "it's")];
        assert_eq!(
            render(Shell::Bash, &env),
            "# because\nexport A='it'\\''s'\n"
        );
        assert_eq!(render(Shell::Fish, &env), "# because\nset -gx A 'it\\'s'\n");
        assert_eq!(
            render(Shell::Powershell, &env),
            "# because\n$env:A = 'it''s'\n"
        );
        assert_eq!(render(Shell::Cmd, &env), "rem because\nset \"A=it's\"\n");
        assert_eq!(render(Shell::Dotenv, &[s("A", "1")]), "# because\nA=1\n");
        assert_eq!(
            render(Shell::Dotenv, &[s("A", "a b\"")]),
            "# because\nA=\"a b\\\"\"\n"
        );
        assert_eq!(
            render(Shell::Conda, &[s("A", "1"), s("B", "x y")]),
            "# A: because\n# B: because\nconda env config vars set A=1 'B=x y'\n"
        );
        assert_eq!(render(Shell::Github, &[s("A", "1")]), "A=1\n");
        assert_eq!(
            render(Shell::Github, &[s("A", "x\nCAICLUST_EOF")]),
            "A<<CAICLUST_EOF_1\nx\nCAICLUST_EOF\nCAICLUST_EOF_1\n"
        );
    }
}
