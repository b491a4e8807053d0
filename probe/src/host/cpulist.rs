//! Linux CPU lists (`0-3,8,10-11`): the affinity mask in `/proc/self/status`
//! and the online CPUs in `/sys/devices/system/cpu/online`.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::facts::{Evidence, EvidenceSource};

/// Largest CPU id accepted in a list. Linux's `NR_CPUS` tops out at 8192;
/// anything far above that is garbage, and refusing it keeps a corrupt file
/// from making us allocate gigabytes.
pub const MAX_CPU_ID: usize = 1 << 16;

/// Parse a Linux CPU list such as `0-3,8,10-11` into sorted, distinct ids.
///
/// Surrounding whitespace is ignored and an empty list gives an empty vector.
/// Reversed ranges, non-numbers and ids above [`MAX_CPU_ID`] are errors; the
/// message quotes the offending item.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for item in text.split(',') {
        let item = item.trim();
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (parse_cpu_id(a, item)?, parse_cpu_id(b, item)?),
            None => {
                let id = parse_cpu_id(item, item)?;
                (id, id)
            }
        };
        if first > last {
            return Err(format!("reversed range '{item}' in CPU list"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_cpu_id(text: &str, item: &str) -> Result<usize, String> {
    let text = text.trim();
    match text.parse::<usize>() {
        Ok(id) if id <= MAX_CPU_ID => Ok(id),
        Ok(_) => Err(format!("CPU id in '{item}' is above {MAX_CPU_ID}")),
        Err(_) => Err(format!("'{item}' is not a CPU id or range")),
    }
}

/// Format CPU ids as a compact Linux CPU list (`0-3,8,10-11`). The input
/// need not be sorted; duplicates are dropped.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = if start == end {
            write!(out, "{start}")
        } else {
            write!(out, "{start}-{end}")
        };
        i += 1;
    }
    out
}

/// Find the value of `Cpus_allowed_list:` in the text of `/proc/<pid>/status`.
pub fn cpus_allowed_list(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
}

/// What was learned about CPU ids from a Linux filesystem tree.
#[derive(Debug, Default)]
pub struct LinuxCpuIds {
    /// Online CPUs, from `sys/devices/system/cpu/online`, with the evidence.
    pub online: Option<(Vec<usize>, Evidence)>,
    /// CPUs this process may run on: the affinity mask, restricted to the
    /// online CPUs when those are known (as `sched_getaffinity` reports
    /// it), with the evidence.
    pub affinity: Option<(Vec<usize>, Evidence)>,
    /// Problems met.
    pub notes: Vec<String>,
}

/// Read the online CPUs and this process's affinity mask below `root`
/// (`/` in production, a fake tree in tests).
pub fn read_linux_cpu_ids(root: &Path) -> LinuxCpuIds {
    let mut out = LinuxCpuIds::default();

    let online_path = root.join("sys/devices/system/cpu/online");
    match std::fs::read_to_string(&online_path) {
        Ok(text) => match parse_cpu_list(&text) {
            Ok(cpus) if !cpus.is_empty() => {
                let detail = format!(
                    "{} logical CPUs online ({}) from {}",
                    cpus.len(),
                    format_cpu_list(&cpus),
                    online_path.display()
                );
                out.online = Some((cpus, Evidence::new(EvidenceSource::System, detail)));
            }
            Ok(_) => out
                .notes
                .push(format!("{} lists no CPU", online_path.display())),
            Err(e) => out.notes.push(format!("{}: {e}", online_path.display())),
        },
        Err(e) => out.notes.push(read_error(&online_path, &e)),
    }

    let status_path = root.join("proc/self/status");
    let status = match std::fs::read_to_string(&status_path) {
        Ok(text) => text,
        Err(e) => {
            out.notes.push(read_error(&status_path, &e));
            return out;
        }
    };
    let Some(list) = cpus_allowed_list(&status) else {
        out.notes.push(format!(
            "{} has no Cpus_allowed_list line",
            status_path.display()
        ));
        return out;
    };
    let mask = match parse_cpu_list(list) {
        Ok(mask) => mask,
        Err(e) => {
            out.notes
                .push(format!("{}: Cpus_allowed_list: {e}", status_path.display()));
            return out;
        }
    };
    let usable: Vec<usize> = match &out.online {
        Some((online, _)) => mask
            .iter()
            .copied()
            .filter(|cpu| online.binary_search(cpu).is_ok())
            .collect(),
        None => mask.clone(),
    };
    if usable.is_empty() {
        out.notes.push(format!(
            "affinity mask '{list}' from {} contains no online CPU; ignored",
            status_path.display()
        ));
        return out;
    }
    let detail = if usable.len() == mask.len() {
        format!(
            "affinity mask {} ({}) from {}",
            format_cpu_list(&usable),
            super::cpu_count(usable.len()),
            status_path.display()
        )
    } else {
        format!(
            "affinity mask {list} from {}, of which online {} ({})",
            status_path.display(),
            format_cpu_list(&usable),
            super::cpu_count(usable.len())
        )
    };
    out.affinity = Some((usable, Evidence::new(EvidenceSource::System, detail)));
    out
}

fn read_error(path: &Path, e: &io::Error) -> String {
    format!("cannot read {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpu_list_parses_ranges_and_singles() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Ok(vec![5]));
        assert_eq!(parse_cpu_list(" 3,1-2,2 "), Ok(vec![1, 2, 3]));
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
    }

    #[test]
    fn host_cpu_list_rejects_garbage() {
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a-b").is_err());
        assert!(parse_cpu_list("0-").is_err());
        assert!(parse_cpu_list("1,,2").is_err());
        assert!(parse_cpu_list("0-18446744073709551615").is_err());
        assert!(parse_cpu_list("-1").is_err());
    }

    #[test]
    fn host_cpu_list_formats_compactly() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[7]), "7");
        assert_eq!(format_cpu_list(&[2, 1, 1]), "1-2");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn host_cpus_allowed_list_line_is_found() {
        let status = "Name:\tcat\nCpus_allowed:\tf\nCpus_allowed_list:\t0-3\nMems_allowed:\t1\n";
        assert_eq!(cpus_allowed_list(status), Some("0-3"));
        assert_eq!(cpus_allowed_list("Name:\tcat\n"), None);
    }
}
