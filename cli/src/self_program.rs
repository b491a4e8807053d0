//! The program that caiclust starts when it needs itself again: the
//! runtime query helper (see [`caiclust_probe::query_runtime`]) and the
//! map's watcher ([`crate::map::reaper`]).
//!
//! For the `caiclust` and `caiclust-check` binaries that is the running
//! binary (`std::env::current_exe()`), with no arguments. Inside Python
//! (the commands a wheel installs run the CLI in-process, through the
//! `caiclust._core` extension module) the running program is the
//! interpreter, so the extension sets, once, a program with leading
//! arguments that loads the module, e.g.
//! `python -c "import caiclust._core"`; the module's initialisation serves
//! the request ([`crate::apps::serve_helpers_if_requested`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use caiclust_core::probe::LiveOptions;

/// A program and the arguments it is always started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfProgram {
    pub program: PathBuf,
    /// Put first on every command line, before anything else.
    pub args: Vec<OsString>,
}

/// [`SelfProgram::set`] was called before with another program.
#[derive(Debug, thiserror::Error)]
#[error("the program caiclust starts for its helpers is already set to {current:?}")]
pub struct AlreadySet {
    /// The program set first (it stays).
    pub current: SelfProgram,
}

static SET: OnceLock<SelfProgram> = OnceLock::new();

impl SelfProgram {
    /// Use `program` with `args` for every helper this process starts
    /// from now on. Settable once: setting the same program again is fine,
    /// another one is refused.
    pub fn set(program: PathBuf, args: Vec<OsString>) -> Result<(), AlreadySet> {
        let wanted = SelfProgram { program, args };
        let current = SET.get_or_init(|| wanted.clone());
        if *current == wanted {
            Ok(())
        } else {
            Err(AlreadySet {
                current: current.clone(),
            })
        }
    }

    /// The program set with [`SelfProgram::set`], else the running
    /// executable without arguments; `None` when neither is known (the
    /// executable's path cannot be read).
    pub fn current() -> Option<SelfProgram> {
        match SET.get() {
            Some(p) => Some(p.clone()),
            None => std::env::current_exe().ok().map(|program| SelfProgram {
                program,
                args: Vec::new(),
            }),
        }
    }

    /// Live-probing options whose runtime queries `helper` serves (none
    /// when `None`), the other options at their defaults.
    pub fn live_options(helper: Option<SelfProgram>) -> LiveOptions {
        let (query_helper, query_helper_args) = match helper {
            Some(h) => (Some(h.program), h.args),
            None => (None, Vec::new()),
        };
        LiveOptions {
            query_helper,
            query_helper_args,
            ..LiveOptions::default()
        }
    }

    /// A command starting this program with its arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_running_executable_then_set_once() {
        assert_eq!(
            SelfProgram::current(),
            Some(SelfProgram {
                program: std::env::current_exe().unwrap(),
                args: Vec::new(),
            })
        );
        let args = vec![OsString::from("-c"), OsString::from("pass")];
        SelfProgram::set("/usr/bin/python3".into(), args.clone()).unwrap();
        SelfProgram::set("/usr/bin/python3".into(), args.clone()).unwrap();
        let e = SelfProgram::set("/usr/bin/python3".into(), Vec::new()).unwrap_err();
        assert_eq!(e.current.args, args);
        let current = SelfProgram::current().unwrap();
        assert_eq!(current.program, PathBuf::from("/usr/bin/python3"));
        let cmd = current.command();
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["-c", "pass"]);
    }
}
