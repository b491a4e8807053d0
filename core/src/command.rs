//! External commands: one thread per slot starts each command fresh
//! (fork+exec), in its own process group (on Windows, its own job: see
//! [`crate::job`]), with stdout and stderr going to
//! the slot's temporary files (no pipes to drain, no deadlock, and huge
//! outputs never sit in memory).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::task::{CommandTask, ExitInfo, Output, StartCause, TaskId};

pub(crate) struct CmdJob {
    pub id: TaskId,
    pub task: CommandTask,
    pub env: Arc<BTreeMap<String, String>>,
    pub memory_limit: usize,
}

/// How a command ended.
pub(crate) struct CmdDone {
    /// How it ended, or why it did not start.
    pub exit: Result<ExitInfo, (String, StartCause)>,
    pub stdout: Output,
    pub stderr: Output,
    pub started: SystemTime,
    pub runtime: std::time::Duration,
}

/// What a slot tells the scheduler about its command.
pub(crate) enum SlotReport {
    /// The command runs as process `pid`.
    Started { id: TaskId, pid: u32 },
    /// It ended (or never started).
    Finished { id: TaskId, done: CmdDone },
}

/// Run jobs until the channel closes, telling `report` about each (it
/// returns false when nobody listens any more).
pub(crate) fn slot_thread(
    slot: usize,
    jobs: Receiver<CmdJob>,
    report: impl Fn(SlotReport) -> bool,
) {
    let mut out = SlotFiles::new();
    while let Ok(job) = jobs.recv() {
        let done = run_one(slot, &job, &mut out, &report);
        if !report(SlotReport::Finished { id: job.id, done }) {
            return;
        }
    }
}

/// The slot's two output files, reused from task to task.
struct SlotFiles {
    stdout: Option<File>,
    stderr: Option<File>,
}

impl SlotFiles {
    fn new() -> SlotFiles {
        SlotFiles {
            stdout: None,
            stderr: None,
        }
    }

    fn file(slot: &mut Option<File>) -> std::io::Result<&mut File> {
        if slot.is_none() {
            *slot = Some(tempfile::tempfile()?);
        }
        slot.as_mut()
            .ok_or_else(|| std::io::Error::other("no file"))
    }

    /// Take what the command wrote: small outputs are read into memory and
    /// the file reused; large ones keep the file.
    fn take(slot: &mut Option<File>, limit: usize) -> Output {
        let Some(file) = slot.as_mut() else {
            return Output::Empty;
        };
        let len = file.seek(SeekFrom::End(0)).unwrap_or(0);
        if len == 0 {
            return Output::Empty;
        }
        if len as usize <= limit {
            let mut buf = Vec::with_capacity(len as usize);
            let ok = file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_end(&mut buf).is_ok();
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            if ok {
                return Output::Memory(buf);
            }
            return Output::Empty;
        }
        match slot.take() {
            Some(file) => Output::File { file, len },
            None => Output::Empty,
        }
    }
}

fn run_one(
    slot: usize,
    job: &CmdJob,
    files: &mut SlotFiles,
    report: &impl Fn(SlotReport) -> bool,
) -> CmdDone {
    let started = SystemTime::now();
    let t0 = Instant::now();
    let fail = |message: String, cause: StartCause| CmdDone {
        exit: Err((message, cause)),
        stdout: Output::Empty,
        stderr: Output::Empty,
        started,
        runtime: t0.elapsed(),
    };
    let Some(program) = job.task.argv.first() else {
        return fail("empty command".into(), StartCause::Other);
    };
    let mut cmd = Command::new(program);
    cmd.args(&job.task.argv[1..]);
    cmd.envs(job.env.iter());
    cmd.envs(job.task.env.iter());
    cmd.env("CAICLUST_SLOT", slot.to_string());
    cmd.env("CAICLUST_SEQ", job.id.to_string());
    if let Some(dir) = &job.task.cwd {
        cmd.current_dir(dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    crate::job::prepare(&mut cmd);
    let stdout = match SlotFiles::file(&mut files.stdout).and_then(|f| f.try_clone()) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                format!("cannot create an output file: {e}"),
                StartCause::Other,
            )
        }
    };
    let stderr = match SlotFiles::file(&mut files.stderr).and_then(|f| f.try_clone()) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                format!("cannot create an output file: {e}"),
                StartCause::Other,
            )
        }
    };
    cmd.stdout(Stdio::from(stdout));
    cmd.stderr(Stdio::from(stderr));
    match &job.task.stdin {
        None => {
            cmd.stdin(Stdio::null());
        }
        Some(bytes) => {
            let file = tempfile::tempfile().and_then(|mut f| {
                f.write_all(bytes)?;
                f.seek(SeekFrom::Start(0))?;
                Ok(f)
            });
            match file {
                Ok(f) => {
                    cmd.stdin(Stdio::from(f));
                }
                Err(e) => {
                    return fail(
                        format!("cannot stage standard input: {e}"),
                        StartCause::Other,
                    )
                }
            }
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let where_ = job
                .task
                .cwd
                .as_ref()
                .map(|d| format!(" in {}", d.display()))
                .unwrap_or_default();
            // A missing working directory reads as "not found" too: it is
            // not the program's fault.
            let cause = match &job.task.cwd {
                Some(d) if !d.is_dir() => StartCause::Other,
                _ => StartCause::of(&e),
            };
            return fail(format!("{program}{where_}: {e}"), cause);
        }
    };
    if let Err(e) = crate::job::adopt(&child) {
        let _ = child.wait();
        return fail(format!("{program}: {e}"), StartCause::Other);
    }
    let pid = child.id();
    report(SlotReport::Started { id: job.id, pid });
    let exit = match child.wait() {
        Ok(status) => Ok(ExitInfo::from_status(status)),
        Err(e) => Err((format!("waiting for {program}: {e}"), StartCause::Other)),
    };
    // What the command left running in its job ends with it (on Unix the
    // scheduler ends what it left in its process group).
    crate::job::release(pid);
    CmdDone {
        exit,
        stdout: SlotFiles::take(&mut files.stdout, job.memory_limit),
        stderr: SlotFiles::take(&mut files.stderr, job.memory_limit),
        started,
        runtime: t0.elapsed(),
    }
}
