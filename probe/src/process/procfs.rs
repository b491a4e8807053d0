//! The small procfs files of a process: `stat`, `status`, `environ` and
//! `cmdline`. Pure parsers over bytes, tested on canned text.

use std::collections::BTreeMap;

/// `PF_EXITING` in the `flags` field of `stat`: the task has begun to exit
/// (set before its memory is released, so its maps may already be empty).
pub(crate) const PF_EXITING: u32 = 0x0000_0004;

/// The fields of `/proc/PID/stat` the reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// `PF_*` flags.
    pub flags: u32,
    /// Start time in clock ticks since boot: tells a process from a later
    /// one that reused its pid.
    pub start_time: u64,
}

impl Stat {
    /// Why this process counts as gone, if it does.
    pub fn exit_reason(&self) -> Option<&'static str> {
        match self.state {
            'Z' => Some("it is a zombie (exited, not yet reaped)"),
            'X' | 'x' => Some("it is dead"),
            _ if self.flags & PF_EXITING != 0 => Some("it is exiting"),
            _ => None,
        }
    }
}

/// Parse `/proc/PID/stat`: `pid (comm) state ppid ...`. The command name
/// may contain spaces and parentheses, so fields are counted from the last
/// `)`.
pub(crate) fn parse_stat(text: &[u8]) -> Result<Stat, String> {
    let close = text
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no ')' after the command name")?;
    let rest = String::from_utf8_lossy(&text[close + 1..]);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field numbers of proc(5), minus the three before this slice.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .copied()
            .ok_or_else(|| format!("field {n} missing"))
    };
    let state = field(3)?.chars().next().ok_or("empty state field")?;
    let flags = field(9)?
        .parse()
        .map_err(|_| format!("flags '{}' is not a number", field(9).unwrap_or("")))?;
    let start_time = field(22)?
        .parse()
        .map_err(|_| format!("starttime '{}' is not a number", field(22).unwrap_or("")))?;
    Ok(Stat {
        state,
        flags,
        start_time,
    })
}

/// The fields of `/proc/PID/status` the reader needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Status {
    /// `Threads:`.
    pub threads: Option<usize>,
    /// `Cpus_allowed_list:`, sorted and distinct.
    pub cpus_allowed: Option<Vec<usize>>,
    /// The effective uid (second number of `Uid:`).
    pub effective_uid: Option<u32>,
}

/// Parse `/proc/PID/status`. Unknown, missing or malformed lines leave the
/// field `None`.
pub(crate) fn parse_status(text: &[u8]) -> Status {
    let text = String::from_utf8_lossy(text);
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Threads" => status.threads = value.parse().ok(),
            "Cpus_allowed_list" => status.cpus_allowed = parse_cpu_list(value),
            "Uid" => {
                status.effective_uid = value.split_whitespace().nth(1).and_then(|u| u.parse().ok())
            }
            _ => {}
        }
    }
    status
}

/// Largest CPU id accepted (Linux's `NR_CPUS` tops out at 8192); a larger
/// one means a corrupt line, not a reason to allocate gigabytes.
const MAX_CPU_ID: usize = 1 << 16;

/// `0-3,8,10-11` → sorted, distinct ids; `None` when malformed.
fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let id: usize = item.parse().ok()?;
                (id, id)
            }
        };
        if first > last || last > MAX_CPU_ID {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Parse `/proc/PID/environ` (`NAME=value` entries, each ended by NUL) into
/// a map, decoding bytes that are not UTF-8 lossily. Entries without `=` or
/// with an empty name are dropped; for a name given twice the first wins,
/// as `getenv` would answer.
pub(crate) fn parse_environ(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for entry in bytes.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        if eq == 0 {
            continue;
        }
        let name = String::from_utf8_lossy(&entry[..eq]).into_owned();
        let value = String::from_utf8_lossy(&entry[eq + 1..]).into_owned();
        vars.entry(name).or_insert(value);
    }
    vars
}

/// Parse `/proc/PID/cmdline`: arguments each ended by NUL, decoded lossily.
/// Empty arguments are kept. A process that rewrote its title
/// (`setproctitle`) may leave one argument with spaces and no final NUL; it
/// is returned as it is.
pub(crate) fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let text = b"4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 120 0 0 0 3 1 0 0 20 0 \
                     3 0 987654 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 2 0 0\n";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.flags, 4194560);
        assert_eq!(stat.start_time, 987654);
        assert_eq!(stat.exit_reason(), None);
    }

    #[test]
    fn stat_states_that_mean_gone() {
        let zombie =
            parse_stat(b"7 (sleep) Z 1 7 7 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0").unwrap();
        assert!(zombie.exit_reason().unwrap().contains("zombie"));
        let exiting = Stat {
            state: 'R',
            flags: PF_EXITING,
            start_time: 1,
        };
        assert_eq!(exiting.exit_reason(), Some("it is exiting"));
        let kthread =
            parse_stat(b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0")
                .unwrap();
        assert_eq!(kthread.exit_reason(), None);
    }

    #[test]
    fn malformed_stat_is_an_error() {
        assert!(parse_stat(b"").is_err());
        assert!(parse_stat(b"12 (x) S 1").is_err());
        assert!(parse_stat(b"12 (x) S 1 1 1 0 -1 notanumber 0 0 0 0 0 0 0 0 20 0 1 0 3").is_err());
    }

    #[test]
    fn status_threads_affinity_uid() {
        let text = b"Name:\tpython3.11\nState:\tS (sleeping)\nTgid:\t4242\n\
                     Uid:\t1000\t1001\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n\
                     Threads:\t17\nCpus_allowed:\tff\nCpus_allowed_list:\t0-3,6,8-9\n\
                     Mems_allowed_list:\t0\n";
        let status = parse_status(text);
        assert_eq!(status.threads, Some(17));
        assert_eq!(status.cpus_allowed, Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(status.effective_uid, Some(1001));
    }

    #[test]
    fn status_missing_or_garbage_fields() {
        let status = parse_status(b"Name:\tx\nThreads:\tmany\nCpus_allowed_list:\t3-1\n");
        assert_eq!(status, Status::default());
        assert_eq!(parse_status(b"\xff\xfe"), Status::default());
        assert_eq!(parse_cpu_list("0-99999999"), None);
        assert_eq!(parse_cpu_list(""), Some(vec![]));
    }

    #[test]
    fn environ_with_odd_bytes() {
        let bytes = b"OMP_NUM_THREADS=1\0LANG=de_DE.ISO-8859-1\0NAME=M\xfcller\0\
                      NOEQUALS\0=C:=C:\\\0EMPTY=\0A=b=c\0OMP_NUM_THREADS=8\0\xff\xfe=x\0";
        let env = parse_environ(bytes);
        assert_eq!(env["OMP_NUM_THREADS"], "1", "first definition wins");
        assert_eq!(env["NAME"], "M\u{fffd}ller");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["A"], "b=c");
        assert!(!env.contains_key("NOEQUALS"));
        assert!(!env.keys().any(|k| k.is_empty()));
        assert_eq!(env["\u{fffd}\u{fffd}"], "x");
    }

    #[test]
    fn environ_without_final_nul_and_empty() {
        assert_eq!(parse_environ(b"A=1\0B=2")["B"], "2");
        assert!(parse_environ(b"").is_empty());
    }

    #[test]
    fn cmdline_forms() {
        assert_eq!(
            parse_cmdline(b"python3\0-c\0\0print('a b')\0"),
            ["python3", "-c", "", "print('a b')"]
        );
        assert_eq!(
            parse_cmdline(b"nginx: worker process"),
            ["nginx: worker process"]
        );
        assert_eq!(parse_cmdline(b"x\xff\0"), ["x\u{fffd}"]);
        assert!(parse_cmdline(b"").is_empty());
    }
}
