//! Stopping everything the backend started: [`IppBackend::shutdown`] and
//! drop ask the driver to stop the cluster, then kill what is left (only
//! processes that carry this cluster's id) and remove the run folder.

use std::time::{Duration, Instant};

use serde_json::json;

use super::reader::lock;
use super::{IppBackend, StopReport};
use crate::tree::{self, StopSignal};

/// How long a stop waits for the driver to stop the cluster itself.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long a stop waits for the driver's output to end once it exited.
const READER_WAIT: Duration = Duration::from_secs(5);

impl IppBackend {
    /// Stop: outstanding tasks are reported cancelled, engines and
    /// controller stopped (when this backend started them), the run folder
    /// removed.
    pub fn shutdown(mut self) -> StopReport {
        self.stop()
    }

    pub(super) fn stop(&mut self) -> StopReport {
        let mut report = StopReport::default();
        let Some(mut child) = self.child.take() else {
            return report;
        };
        let _ = self.send(&json!({"op": "shutdown"}));
        // Closing its input is the other way to say stop.
        self.input.close();
        let deadline = Instant::now() + STOP_WAIT;
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            report
                .killed
                .extend(tree::signal_tree(self.driver_pid, StopSignal::Kill));
            let _ = child.wait();
        }
        // Whatever the driver started that outlives it in its process
        // group (an ssh stuck on a host whose link is cut) holds its output
        // pipes open: it goes, so that the readers see the end.
        #[cfg(unix)]
        if tree::group_alive(self.driver_pid) {
            tree::signal_group(self.driver_pid, StopSignal::Kill);
        }
        // A reader still blocked after that (a process that left the
        // group holds the pipe) is left to end with the pipe: a stop never
        // hangs on it.
        let until = Instant::now() + READER_WAIT;
        for h in self.readers.drain(..) {
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let (pids, stopped) = {
            let s = lock(&self.shared);
            (s.pids.clone(), s.stopped.clone())
        };
        report.clean = exited && stopped.as_ref().is_some_and(|left| left.is_empty());
        if self.owned {
            for pid in pids {
                if tree::alive(pid) && belongs_to(pid, &self.cluster_id) {
                    report
                        .killed
                        .extend(tree::signal_tree(pid, StopSignal::Kill));
                }
            }
        }
        report.killed.sort_unstable();
        report.killed.dedup();
        if let Some(dir) = self.run_dir.take() {
            let _ = dir.close();
        }
        report
    }
}

impl Drop for IppBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Is `pid` one of this cluster's processes? On Linux its environment must
/// carry the cluster id (ipyparallel's launchers set `IPP_CLUSTER_ID`), so
/// a recycled pid is never killed; elsewhere the pid is trusted.
fn belongs_to(pid: u32, cluster_id: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        let needle = format!("IPP_CLUSTER_ID={cluster_id}");
        match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(env) => env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()),
            Err(_) => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, cluster_id);
        true
    }
}
