//! Starting the backend: the driver process (its configuration written
//! to its input, its output read by the reader threads) and the wait for
//! the cluster to be ready, with an error that says why it is not.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::config::driver_config;
use super::input::Input;
use super::reader::{lock, read_driver, read_log, Shared};
use super::{wire, IppBackend, IppConfig, IppError, Launcher, DRIVER};

/// What `python -c` runs: it reads the driver's source (a JSON string) from
/// the first line of its input and runs it as `__main__`; the driver reads
/// its configuration from the second. (The driver itself is too long for
/// a Windows command line.)
const BOOTSTRAP: &str = "import sys, json; \
    exec(compile(json.loads(sys.stdin.readline()), 'caiclust-ipp-driver.py', 'exec'))";

/// How long the Rust side waits, past the startup deadline, for the driver
/// to report (importing ipyparallel, cleaning up after a failure).
const STARTUP_SLACK: Duration = Duration::from_secs(30);

impl IppBackend {
    /// Start a cluster (or attach to one) and wait for its engines, at
    /// most `config.startup_timeout` (plus a little for the interpreter to
    /// start and clean up). The error names every engine that failed and
    /// why; nothing is left running after an error.
    pub fn start(config: IppConfig) -> Result<IppBackend, IppError> {
        config.validate()?;
        let owned = config.attach.is_none();
        let parent = config
            .profile_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let run_dir = tempfile::Builder::new()
            .prefix("caiclust-ipp-")
            .tempdir_in(&parent)
            .map_err(|source| IppError::RunDir {
                dir: parent.clone(),
                source,
            })?;
        let cluster_id = fresh_cluster_id();
        let profile_dir = run_dir.path().join("profile");
        let ipython_dir = run_dir.path().join("ipython");
        let mut driver_config = driver_config(&config, &profile_dir, &cluster_id);
        driver_config["run_dir"] = json!(run_dir.path());

        let mut cmd = Command::new(&config.python);
        cmd.arg("-c")
            .arg(BOOTSTRAP)
            .env("IPYTHONDIR", &ipython_dir)
            .envs(config.env.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &config.work_dir {
            if config.engine_launcher == Launcher::Local {
                cmd.current_dir(dir);
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own group: a Ctrl-C meant for the caller does not reach
            // it; it notices the caller's end by its input closing.
            cmd.process_group(0);
        }
        // Windows: in a job of its own, so that the driver and the cluster
        // it starts end with this process, even killed outright.
        crate::job::prepare(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| IppError::Spawn {
            python: config.python.clone(),
            source,
        })?;
        if let Err(source) = crate::job::adopt(&child) {
            let _ = child.wait();
            return Err(IppError::Spawn {
                python: config.python.clone(),
                source,
            });
        }
        let driver_pid = child.id();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let shared = Arc::clone(&shared);
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                read_driver(BufReader::new(out), &shared, &tx, driver_pid)
            }));
        }
        if let Some(err) = child.stderr.take() {
            let shared = Arc::clone(&shared);
            readers.push(std::thread::spawn(move || {
                read_log(BufReader::new(err), &shared)
            }));
        }
        let mut stdin = child.stdin.take();
        if let Some(input) = stdin.as_mut() {
            // Both lines at once; a driver that died at start shows in the
            // startup wait (its log says why).
            let mut head = serde_json::to_string(DRIVER).unwrap_or_default();
            head.push('\n');
            head.push_str(&driver_config.to_string());
            head.push('\n');
            let _ = input.write_all(head.as_bytes()).and_then(|_| input.flush());
        }
        let mut backend = IppBackend {
            config,
            child: Some(child),
            driver_pid,
            input: Input::start(stdin),
            events: rx,
            events_tx: tx,
            early: Mutex::new(VecDeque::new()),
            shared,
            readers,
            run_dir: Some(run_dir),
            cluster_id,
            connection_file: None,
            owned,
            versions: (String::new(), String::new()),
        };
        match backend.wait_ready() {
            Ok(()) => Ok(backend),
            Err(e) => {
                backend.stop();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), IppError> {
        let deadline = Instant::now() + self.config.startup_timeout + STARTUP_SLACK;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IppError::Startup {
                    message: format!(
                        "the driver did not report within {} s (the startup deadline plus {} s)",
                        (self.config.startup_timeout + STARTUP_SLACK).as_secs_f64(),
                        STARTUP_SLACK.as_secs_f64()
                    ),
                    engines: Vec::new(),
                    log: self.log_text(),
                });
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(ev) => self.early_lock().push_back(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            let (ready, failed, eof) = {
                let s = lock(&self.shared);
                (s.ready.clone(), s.failed.clone(), s.eof)
            };
            if let Some(r) = ready {
                self.versions = (
                    r["python"].as_str().unwrap_or_default().to_string(),
                    r["ipyparallel"].as_str().unwrap_or_default().to_string(),
                );
                if let Some(id) = r["cluster_id"].as_str() {
                    self.cluster_id = id.to_string();
                }
                self.connection_file = r["connection_file"].as_str().map(PathBuf::from);
                return Ok(());
            }
            if let Some(f) = failed {
                // Let the driver finish its cleanup and the log reader
                // catch up before the message is built.
                self.wait_driver_exit(Duration::from_secs(10));
                return Err(IppError::Startup {
                    message: f["message"]
                        .as_str()
                        .unwrap_or("unknown failure")
                        .trim_end()
                        .to_string(),
                    engines: wire::engine_failures(&f["engines"]),
                    log: self.log_text(),
                });
            }
            if eof {
                let status = self.wait_driver_exit(Duration::from_secs(2));
                return Err(IppError::Startup {
                    message: format!(
                        "the driver ({}) exited during startup{}",
                        self.config.python.display(),
                        status.map(|s| format!(" ({s})")).unwrap_or_default()
                    ),
                    engines: Vec::new(),
                    log: self.log_text(),
                });
            }
        }
    }

    fn log_text(&self) -> String {
        // The log reader may still be draining the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let s = lock(&self.shared);
        s.log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn wait_driver_exit(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(crate::task::ExitInfo::from_status(st).to_string()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }
}

/// `caiclust-<unix seconds>-<pid>-<n>`: unique per run on this host.
fn fresh_cluster_id() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "caiclust-{secs}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_fresh() {
        assert_ne!(fresh_cluster_id(), fresh_cluster_id());
    }
}
