//! Windows: the jobs of the processes this process started, by pid.
//!
//! A process is started suspended, assigned to a new job, and only then
//! resumed: std's `Command` closes the handle of the new process's main
//! thread, so the thread is found again in a Toolhelp snapshot (a process
//! started suspended has exactly one thread).

use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
    TerminateJobObject, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    OpenThread, ResumeThread, TerminateProcess, CREATE_SUSPENDED, THREAD_SUSPEND_RESUME,
};

/// The exit code of processes ended by a stop (as `TerminateProcess`
/// gives elsewhere in caiclust).
const STOPPED: u32 = 1;

/// A job handle, closed (killing what is left in the job) when dropped.
struct Job(HANDLE);

// SAFETY: a job handle is a kernel handle, usable from any thread; it is
// only ever used under the registry's lock and closed once, on drop.
unsafe impl Send for Job {}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the handle is ours (from CreateJobObjectW) and closed
        // only here.
        unsafe {
            CloseHandle(self.0);
        }
    }
}

impl Job {
    /// A new unnamed job, its handle not inheritable, that kills its
    /// processes when its last handle closes.
    fn new() -> std::io::Result<Job> {
        // SAFETY: no security attributes (so the handle is not
        // inheritable) and no name; the limit structure is ours, zeroed
        // but for the one flag, and passed with its size.
        unsafe {
            let h = CreateJobObjectW(std::ptr::null(), std::ptr::null());
            if h.is_null() {
                return Err(std::io::Error::last_os_error());
            }
            let job = Job(h);
            let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            let ok = SetInformationJobObject(
                job.0,
                JobObjectExtendedLimitInformation,
                (&raw const info).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            );
            if ok == 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(job)
        }
    }

    fn assign(&self, process: HANDLE) -> std::io::Result<()> {
        // SAFETY: both handles are valid: the job is ours, the process
        // handle belongs to a `Child` the caller holds.
        if unsafe { AssignProcessToJobObject(self.0, process) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Processes still running in the job.
    fn active(&self) -> bool {
        // SAFETY: the structure is ours, passed with its size.
        unsafe {
            let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = std::mem::zeroed();
            let ok = QueryInformationJobObject(
                self.0,
                JobObjectBasicAccountingInformation,
                (&raw mut info).cast(),
                std::mem::size_of::<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION>() as u32,
                std::ptr::null_mut(),
            );
            // Unreadable: assume it still holds something.
            ok == 0 || info.ActiveProcesses > 0
        }
    }

    fn terminate(&self) {
        // SAFETY: the job handle is ours.
        unsafe {
            TerminateJobObject(self.0, STOPPED);
        }
    }
}

/// The jobs of the processes this process started, by the pid of the
/// process each was made for. Jobs left empty are dropped as new ones
/// come.
static JOBS: Mutex<Vec<(u32, Job)>> = Mutex::new(Vec::new());

fn jobs() -> MutexGuard<'static, Vec<(u32, Job)>> {
    JOBS.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn prepare(cmd: &mut Command) {
    cmd.creation_flags(CREATE_SUSPENDED);
}

pub(super) fn adopt(child: &Child) -> std::io::Result<()> {
    let pid = child.id();
    let process = child.as_raw_handle() as HANDLE;
    let job = Job::new().and_then(|job| job.assign(process).map(|()| job));
    if let Err(e) = resume(pid) {
        // SAFETY: the process handle belongs to `child`, which the
        // caller holds; a suspended process that cannot be resumed would
        // never end by itself.
        unsafe {
            TerminateProcess(process, STOPPED);
        }
        return Err(e);
    }
    if let Ok(job) = job {
        let mut jobs = jobs();
        jobs.retain(|(_, j)| j.active());
        jobs.push((pid, job));
    }
    Ok(())
}

pub(super) fn release(pid: u32) {
    let mut jobs = jobs();
    jobs.retain(|(p, _)| *p != pid);
}

pub(super) fn terminate(pid: u32) -> bool {
    let jobs = jobs();
    let mut found = false;
    for (_, job) in jobs.iter().filter(|(p, _)| *p == pid) {
        job.terminate();
        found = true;
    }
    found
}

pub(super) fn active(pid: u32) -> Option<bool> {
    let jobs = jobs();
    let mut of_pid = jobs.iter().filter(|(p, _)| *p == pid).peekable();
    of_pid.peek()?;
    Some(of_pid.any(|(_, j)| j.active()))
}

/// Resume the (one, suspended) thread of process `pid`.
fn resume(pid: u32) -> std::io::Result<()> {
    let mut resumed = 0;
    // SAFETY: the snapshot and thread handles are checked and closed; the
    // entry is ours, its size set as the API requires.
    unsafe {
        let snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
        if snap == INVALID_HANDLE_VALUE {
            return Err(std::io::Error::last_os_error());
        }
        let mut entry: THREADENTRY32 = std::mem::zeroed();
        entry.dwSize = std::mem::size_of::<THREADENTRY32>() as u32;
        let mut ok = Thread32First(snap, &mut entry);
        while ok != 0 {
            if entry.th32OwnerProcessID == pid {
                let thread = OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID);
                if !thread.is_null() {
                    if ResumeThread(thread) != u32::MAX {
                        resumed += 1;
                    }
                    CloseHandle(thread);
                }
            }
            ok = Thread32Next(snap, &mut entry);
        }
        CloseHandle(snap);
    }
    if resumed == 0 {
        return Err(std::io::Error::other(format!(
            "cannot resume process {pid}, started suspended to enter its job"
        )));
    }
    Ok(())
}
