//! The preparation of a map, before anything runs: the command line's
//! values checked, the inputs read and combined into jobs, and what the job
//! log says is done already (`--resume`, `--resume-failed`), hence which
//! jobs run and which are skipped; then, when the run starts, the job-log
//! writer.
//!
//! Nothing here prints: what deserves a warning is collected in
//! [`Preparation::warnings`] for the driver to show.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use caiclust_core::HaltPolicy;

use super::dispatch::Start;
use super::inputs::{self, Origin, Source, SourceSpec};
use super::joblog::{Joblog, Writer};
use super::jobs::{Prepared, Work};
use super::options::{self, MapArgs, Timeout};
use super::placeholders::Template;
use super::MapError;

/// The values of the command line that need checking, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedOptions {
    pub timeout: Option<Timeout>,
    pub stall: Option<Duration>,
    pub grace: Option<Duration>,
    pub halt: Option<HaltPolicy>,
    pub env: Vec<(String, String)>,
}

impl CheckedOptions {
    /// Check everything about the command line that can be checked before
    /// reading any input.
    pub fn check(args: &MapArgs) -> Result<CheckedOptions, MapError> {
        if let Some(f) = &args.function {
            options::check_function(f)?;
        }
        if args.jobs == Some(0) {
            return Err(MapError::Usage("-j/--jobs must be at least 1".into()));
        }
        let duration = |flag: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|s| options::parse_duration(flag, s))
                .transpose()
        };
        Ok(CheckedOptions {
            timeout: args.timeout.as_deref().map(Timeout::parse).transpose()?,
            stall: duration("--stall", &args.stall)?,
            grace: duration("--grace", &args.grace)?,
            halt: args.halt.as_deref().map(options::parse_halt).transpose()?,
            env: options::parse_env(&args.env)?,
        })
    }
}

/// Everything a map knows before its cluster starts.
#[derive(Debug)]
pub struct Preparation {
    pub options: CheckedOptions,
    /// What every job does.
    pub work: Work,
    pub sources: Vec<Source>,
    /// Every job's inputs (an index into each source), job `i + 1` at `i`.
    pub rows: Vec<Vec<usize>>,
    /// The rows to run, in order: all but those the job log has done.
    pub todo: Vec<usize>,
    /// The job log read back, when resuming from it.
    pub previous: Option<Joblog>,
    /// What the user should hear about before the run (a job log about to
    /// be replaced, one whose commands no longer match the inputs).
    pub warnings: Vec<String>,
}

impl Preparation {
    /// Check the command line, read the inputs (standard input from
    /// `stdin` when it is a source; with no source given, it is one unless
    /// `stdin_is_terminal`), and read the job log when resuming.
    pub fn new(
        args: &MapArgs,
        stdin: &mut dyn Read,
        stdin_is_terminal: bool,
    ) -> Result<Preparation, MapError> {
        let options = CheckedOptions::check(args)?;
        let (work, sources) = read_inputs(args, stdin, stdin_is_terminal)?;
        let rows = inputs::combine(&sources);
        let mut warnings = Vec::new();
        let previous = previous_joblog(args, &mut warnings)?;
        let todo = to_run(rows.len(), previous.as_ref(), args.resume_failed);
        let mut prep = Preparation {
            options,
            work,
            sources,
            rows,
            todo,
            previous,
            warnings,
        };
        if let (Some(log), Some(path)) = (&prep.previous, &args.joblog) {
            let changed = resume_warnings(log, path, &prep.work, &prep.sources, &prep.rows);
            prep.warnings.extend(changed);
        }
        Ok(prep)
    }

    /// Jobs in all (done before or not).
    pub fn total(&self) -> u64 {
        self.rows.len() as u64
    }

    /// The job `start` names: its task and command, built from its inputs.
    pub fn job(&self, start: &Start) -> Prepared {
        self.work.prepare(
            &self.sources,
            &self.rows[start.row],
            start.seq,
            start.slot,
            self.total(),
        )
    }

    /// The inputs of `row` joined by spaces (the `--tag` text).
    pub fn tag(&self, row: usize) -> String {
        self.rows[row]
            .iter()
            .enumerate()
            .map(|(s, &v)| self.sources[s].values[v].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `--dry-run`: the commands that would run, one per line (a newline
    /// in one reads `\n`).
    pub fn dry_run(&self) -> String {
        let mut out = String::new();
        for &i in &self.todo {
            let seq = i as u64 + 1;
            let p = self
                .work
                .prepare(&self.sources, &self.rows[i], seq, 1, self.total());
            out.push_str(&p.command.replace('\n', "\\n"));
            out.push('\n');
        }
        out
    }

    /// The job log's writer for the run (`--joblog`): the log read back
    /// continued, or a new one.
    pub fn open_joblog(&self, path: Option<&Path>) -> Result<Option<Writer>, MapError> {
        Ok(match (path, &self.previous) {
            (Some(p), Some(log)) => Some(Writer::append(p, log)?),
            (Some(p), None) => Some(Writer::create(p)?),
            (None, _) => None,
        })
    }

    /// Nothing to run: a job log asked for and not resumed still starts
    /// afresh (its header alone).
    pub fn log_nothing_run(&self, path: Option<&Path>) -> Result<(), MapError> {
        if let (Some(p), None) = (path, &self.previous) {
            Writer::create(p)?;
        }
        Ok(())
    }
}

/// The inputs, read, and the work each job does with them.
fn read_inputs(
    args: &MapArgs,
    stdin: &mut dyn Read,
    stdin_is_terminal: bool,
) -> Result<(Work, Vec<Source>), MapError> {
    let mut line = inputs::split(&args.command, &args.arg_file)?;
    if let (Some(f), Some(first)) = (&args.function, line.command.first()) {
        return Err(MapError::Usage(format!(
            "give a command or -f {f}, not both (the command starts with '{first}')"
        )));
    }
    if line.sources.is_empty() {
        if stdin_is_terminal {
            return Err(MapError::Usage(
                "no inputs: give them after ::: (or :::: FILE, -a FILE), or pipe them in, one per line".into(),
            ));
        }
        line.sources.push(SourceSpec {
            origin: Origin::Stdin,
            values: Vec::new(),
            linked: false,
        });
    }
    let sources = inputs::read_all(line.sources, args.null, stdin)?;
    let work = match &args.function {
        Some(f) => Work::Call {
            function: f.clone(),
            json: if args.json_args {
                Some(Work::parse_json_inputs(&sources)?)
            } else {
                None
            },
        },
        None if line.command.is_empty() => Work::InputIsCommand,
        None => {
            let t = Template::parse(&line.command, sources.len()).map_err(MapError::Usage)?;
            if args.shell {
                Work::Shell(t)
            } else {
                Work::Argv(t)
            }
        }
    };
    Ok((work, sources))
}

/// The job log to continue (`--resume`, `--resume-failed`), read. Without
/// either, a log about to be replaced that has jobs in it earns a warning
/// (not for `--dry-run`, which writes none).
fn previous_joblog(args: &MapArgs, warnings: &mut Vec<String>) -> Result<Option<Joblog>, MapError> {
    let Some(path) = &args.joblog else {
        return Ok(None);
    };
    if args.resume || args.resume_failed {
        return Ok(Joblog::read(path)?);
    }
    if !args.dry_run {
        if let Ok(Some(old)) = Joblog::read(path) {
            if !old.entries.is_empty() {
                warnings.push(format!(
                    "replacing the job log {} ({} jobs logged); --resume would continue it",
                    path.display(),
                    old.entries.len()
                ));
            }
        }
    }
    Ok(None)
}

/// The rows to run of `rows`: those the job log `previous` does not list
/// (`--resume`), or does not list as succeeded (`--resume-failed`).
pub fn to_run(rows: usize, previous: Option<&Joblog>, resume_failed: bool) -> Vec<usize> {
    let done = previous
        .map(|log| log.done(resume_failed))
        .unwrap_or_default();
    (0..rows)
        .filter(|&i| !done.contains(&(i as u64 + 1)))
        .collect()
}

/// `--resume` goes by job number, as GNU parallel: the warnings to give
/// when the job log's commands are not what the same numbers run now, or
/// it logs jobs these inputs do not have.
pub fn resume_warnings(
    log: &Joblog,
    path: &Path,
    work: &Work,
    sources: &[Source],
    rows: &[Vec<usize>],
) -> Vec<String> {
    // {%} differs from run to run; compare only when it is not used.
    let uses_slot = matches!(work, Work::Argv(t) | Work::Shell(t) if t.uses_slot());
    let mut changed = Vec::new();
    let mut beyond = 0usize;
    for (seq, (line, command)) in log.commands() {
        let Some(row) = usize::try_from(seq - 1).ok().and_then(|i| rows.get(i)) else {
            beyond += 1;
            continue;
        };
        let now = work
            .prepare(sources, row, seq, 1, rows.len() as u64)
            .command;
        if !uses_slot && now != command {
            changed.push(format!(
                "{}:{line}: job {seq} ran `{command}`, now it would run `{now}`",
                path.display()
            ));
        }
    }
    let mut warnings = Vec::new();
    if !changed.is_empty() {
        warnings.push(format!(
            "the inputs seem to have changed since the job log was written; --resume skips jobs by number, as GNU parallel does:\n  {}{}",
            changed.iter().take(3).cloned().collect::<Vec<_>>().join("\n  "),
            if changed.len() > 3 {
                format!("\n  ... and {} more", changed.len() - 3)
            } else {
                String::new()
            }
        ));
    }
    if beyond > 0 {
        warnings.push(format!(
            "{}: {beyond} logged jobs have numbers beyond the {} jobs of these inputs",
            path.display(),
            rows.len()
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::map::joblog::{Entry, HEADER};

    /// `echo {#} {}` over `a b c d`, logging to `joblog`.
    fn args(joblog: Option<PathBuf>) -> MapArgs {
        let words = ["echo", "{#}", "{}", ":::", "a", "b", "c", "d"];
        MapArgs {
            command: words.iter().map(|w| w.to_string()).collect(),
            joblog,
            ..MapArgs::default()
        }
    }

    fn prepare(args: &MapArgs) -> Result<Preparation, MapError> {
        Preparation::new(args, &mut std::io::empty(), true)
    }

    fn entry(seq: u64, exitval: i64, command: &str) -> Entry {
        Entry {
            seq,
            host: ":".into(),
            starttime: 1_700_000_000.0,
            runtime: 0.5,
            send: 0,
            receive: 0,
            exitval,
            signal: 0,
            command: command.into(),
        }
    }

    /// A job log in a fresh folder: job 1 succeeded, job 3 failed.
    fn logged() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("run.log");
        let mut w = Writer::create(&path).expect("a new job log");
        w.write(&entry(1, 0, "echo 1 a")).expect("written");
        w.write(&entry(3, 1, "echo 3 c")).expect("written");
        (dir, path)
    }

    #[test]
    fn every_input_is_a_job_and_jobs_are_built_from_their_row() {
        let prep = prepare(&args(None)).expect("prepared");
        assert_eq!(prep.total(), 4);
        assert_eq!(prep.todo, [0, 1, 2, 3]);
        assert!(prep.previous.is_none() && prep.warnings.is_empty());
        let start = Start {
            row: 2,
            seq: 3,
            slot: 2,
        };
        assert_eq!(prep.job(&start).command, "echo 3 c");
        assert_eq!(prep.tag(2), "c");
        assert_eq!(prep.dry_run(), "echo 1 a\necho 2 b\necho 3 c\necho 4 d\n");
    }

    #[test]
    fn resume_skips_every_job_the_log_lists() {
        let (_dir, path) = logged();
        let args = MapArgs {
            resume: true,
            ..args(Some(path))
        };
        let prep = prepare(&args).expect("prepared");
        assert_eq!(prep.todo, [1, 3], "jobs 1 and 3 are logged");
        assert!(prep.warnings.is_empty(), "{:?}", prep.warnings);
        assert_eq!(prep.dry_run(), "echo 2 b\necho 4 d\n");
    }

    #[test]
    fn resume_failed_skips_only_the_jobs_that_succeeded() {
        let (_dir, path) = logged();
        let args = MapArgs {
            resume_failed: true,
            ..args(Some(path))
        };
        let prep = prepare(&args).expect("prepared");
        assert_eq!(prep.todo, [1, 2, 3], "job 3 failed: it runs again");
    }

    #[test]
    fn resuming_without_a_log_runs_everything_and_starts_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("none.log");
        let args = MapArgs {
            resume: true,
            ..args(Some(path.clone()))
        };
        let prep = prepare(&args).expect("prepared");
        assert_eq!(prep.todo, [0, 1, 2, 3]);
        assert!(prep.open_joblog(Some(&path)).expect("opened").is_some());
        let text = std::fs::read_to_string(&path).expect("created");
        assert_eq!(text, format!("{HEADER}\n"));
    }

    #[test]
    fn resuming_continues_the_log() {
        let (_dir, path) = logged();
        let args = MapArgs {
            resume: true,
            ..args(Some(path.clone()))
        };
        let prep = prepare(&args).expect("prepared");
        let mut w = prep
            .open_joblog(Some(&path))
            .expect("opened")
            .expect("a writer");
        w.write(&entry(2, 0, "echo 2 b")).expect("written");
        let log = Joblog::read(&path).expect("readable").expect("not empty");
        assert_eq!(log.done(false).into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        // Nothing left to run: the log stays as it is.
        prep.log_nothing_run(Some(&path)).expect("nothing to do");
        let again = Joblog::read(&path).expect("readable").expect("not empty");
        assert_eq!(again.entries.len(), 3);
    }

    #[test]
    fn a_log_not_resumed_is_replaced_with_a_warning() {
        let (_dir, path) = logged();
        let prep = prepare(&args(Some(path.clone()))).expect("prepared");
        assert_eq!(prep.todo, [0, 1, 2, 3]);
        assert_eq!(prep.warnings.len(), 1);
        assert!(
            prep.warnings[0].contains("replacing the job log")
                && prep.warnings[0].contains("(2 jobs logged)"),
            "{:?}",
            prep.warnings
        );
        // Not before it runs, though.
        let text = std::fs::read_to_string(&path).expect("readable");
        assert_eq!(text.lines().count(), 3);
        prep.log_nothing_run(Some(&path)).expect("replaced");
        assert_eq!(
            std::fs::read_to_string(&path).expect("readable"),
            format!("{HEADER}\n")
        );

        // A dry run writes no log, so it says nothing about it.
        let dry = MapArgs {
            dry_run: true,
            ..args(Some(path))
        };
        assert!(prepare(&dry).expect("prepared").warnings.is_empty());
    }

    #[test]
    fn resuming_with_changed_inputs_warns_by_job_number() {
        let (_dir, path) = logged();
        let log = Joblog::read(&path).expect("readable").expect("not empty");
        let mut w = Writer::append(&path, &log).expect("appendable");
        w.write(&entry(2, 0, "echo 2 zzz")).expect("written");
        w.write(&entry(9, 0, "echo 9 i")).expect("written");
        let args = MapArgs {
            resume: true,
            ..args(Some(path))
        };
        let prep = prepare(&args).expect("prepared");
        assert_eq!(prep.todo, [3], "skipped by number all the same");
        assert_eq!(prep.warnings.len(), 2, "{:?}", prep.warnings);
        assert!(
            prep.warnings[0].contains(":4: job 2 ran `echo 2 zzz`, now it would run `echo 2 b`"),
            "{}",
            prep.warnings[0]
        );
        assert!(
            prep.warnings[1].contains("1 logged jobs have numbers beyond the 4 jobs"),
            "{}",
            prep.warnings[1]
        );
    }

    #[test]
    fn slot_dependent_commands_are_not_compared_on_resume() {
        let (_dir, path) = logged();
        let words = ["echo", "{%}", "{}", ":::", "a", "b", "c", "d"];
        let args = MapArgs {
            command: words.iter().map(|w| w.to_string()).collect(),
            resume: true,
            joblog: Some(path),
            ..MapArgs::default()
        };
        assert!(prepare(&args).expect("prepared").warnings.is_empty());
    }

    #[test]
    fn options_are_checked_before_any_input_is_read() {
        let bad = |f: fn(&mut MapArgs)| {
            let mut a = args(None);
            f(&mut a);
            prepare(&a).expect_err("refused").to_string()
        };
        assert!(bad(|a| a.jobs = Some(0)).contains("-j/--jobs"));
        assert!(bad(|a| a.halt = Some("sometimes".into())).contains("--halt"));
        assert!(bad(|a| a.stall = Some("soon".into())).contains("--stall"));
        assert!(bad(|a| a.grace = Some("0".into())).contains("--grace"));
        assert!(bad(|a| a.env = vec!["NOVALUE".into()]).contains("--env"));
        assert!(bad(|a| a.function = Some("nomodule".into())).contains("-f"));
        let e = bad(|a| a.function = Some("m:f".into()));
        assert!(e.contains("not both") && e.contains("'echo'"), "{e}");

        let mut a = args(None);
        a.timeout = Some("300%".into());
        a.grace = Some("1m".into());
        let checked = CheckedOptions::check(&a).expect("valid");
        assert_eq!(checked.timeout, Some(Timeout::PercentOfMedian(300.0)));
        assert_eq!(checked.grace, Some(Duration::from_secs(60)));
    }

    #[test]
    fn standard_input_is_the_source_unless_it_is_a_terminal() {
        let a = MapArgs {
            command: vec!["echo".into()],
            ..MapArgs::default()
        };
        let e = prepare(&a).expect_err("nothing to read").to_string();
        assert!(e.contains("no inputs"), "{e}");
        let prep = Preparation::new(&a, &mut &b"x\ny z\n"[..], false).expect("prepared");
        assert_eq!(prep.todo, [0, 1]);
        assert_eq!(prep.tag(1), "y z");
        assert_eq!(prep.dry_run(), "echo x\necho 'y z'\n");
    }
}
