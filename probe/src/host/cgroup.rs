//! The CPU bandwidth limit of this process's cgroup (Linux).
//!
//! The process's cgroup paths come from `/proc/self/cgroup`, the places the
//! hierarchies are mounted from `/proc/self/mountinfo`. A limit set on any
//! ancestor applies too, so every folder from the process's cgroup up to the
//! mount point is read and the tightest limit wins: `cpu.max` for the
//! cgroup v2 unified hierarchy, `cpu.cfs_quota_us` / `cpu.cfs_period_us` for
//! the cgroup v1 `cpu` controller. Both are read on hybrid systems.
//!
//! Limits set above the mount point (typical inside a container with a
//! cgroup namespace) are invisible here; the container runtime usually
//! copies them down into the container's own cgroup.

use std::cmp::Ordering;
use std::io;
use std::path::{Path, PathBuf};

use crate::facts::CgroupCpuLimit;

/// The period the kernel uses when `cpu.max` gives none, in microseconds.
const DEFAULT_PERIOD_US: u64 = 100_000;

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// 0 for the cgroup v2 unified hierarchy.
    pub hierarchy_id: u32,
    /// v1 controllers of the hierarchy (`cpu`, `cpuacct`), or
    /// `name=systemd`; empty for v2.
    pub controllers: Vec<String>,
    /// The process's cgroup, relative to the hierarchy's root (in the
    /// process's cgroup namespace).
    pub path: String,
}

impl CgroupEntry {
    /// Is this the cgroup v2 unified hierarchy?
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    /// Does this v1 hierarchy carry the `cpu` controller?
    pub fn has_cpu_controller(&self) -> bool {
        self.controllers.iter().any(|c| c == "cpu")
    }
}

/// Parse the text of `/proc/self/cgroup`. Lines that do not have the
/// `id:controllers:path` shape are skipped with a note.
pub fn parse_cgroup_file(text: &str, notes: &mut Vec<String>) -> Vec<CgroupEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            notes.push(format!("/proc/self/cgroup: malformed line '{line}'"));
            continue;
        };
        let Ok(hierarchy_id) = id.trim().parse::<u32>() else {
            notes.push(format!("/proc/self/cgroup: malformed line '{line}'"));
            continue;
        };
        if !path.starts_with('/') {
            notes.push(format!("/proc/self/cgroup: malformed line '{line}'"));
            continue;
        }
        entries.push(CgroupEntry {
            hierarchy_id,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    entries
}

/// A cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// 1 (`cgroup`) or 2 (`cgroup2`).
    pub version: u8,
    /// Field 4: the folder of the hierarchy that is mounted (`/` unless the
    /// mount shows only part of the hierarchy, as in many containers).
    pub root: String,
    /// Field 5: where it is mounted.
    pub mount_point: String,
    /// For v1, the controllers from the super options (`cpu`, `cpuacct`).
    pub controllers: Vec<String>,
}

/// Parse the text of `/proc/self/mountinfo`, keeping the cgroup and cgroup2
/// mounts. Octal escapes (`\040` for a space) in paths are decoded. Cgroup
/// lines that cannot be read are skipped with a note; other lines are
/// ignored.
pub fn parse_mountinfo(text: &str, notes: &mut Vec<String>) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Fields 1-6 are fixed, then optional fields up to a lone `-`, then
        // the filesystem type, the source and the super options. A mount
        // point named `-` is field 5 and must not be taken for the
        // separator, so the search starts at field 7.
        let sep = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6);
        let fstype = match sep {
            Some(sep) => fields.get(sep + 1).copied().unwrap_or(""),
            // Not enough fields to find the type: only a problem when the
            // line looks like a cgroup mount.
            None => fields
                .iter()
                .rev()
                .find(|f| f.starts_with("cgroup"))
                .copied()
                .unwrap_or(""),
        };
        let version = match fstype {
            "cgroup2" => 2,
            "cgroup" => 1,
            _ => continue,
        };
        let Some(sep) = sep else {
            notes.push(format!("/proc/self/mountinfo: malformed line '{line}'"));
            continue;
        };
        let controllers = if version == 1 {
            fields
                .get(sep + 3)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| !o.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        mounts.push(CgroupMount {
            version,
            root: unescape_octal(fields[3]),
            mount_point: unescape_octal(fields[4]),
            controllers,
        });
    }
    mounts
}

/// Decode the `\ooo` octal escapes the kernel uses in mountinfo paths.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CPU bandwidth setting: `quota_us` microseconds of CPU time per
/// `period_us`; no quota means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    /// `None` for `max` (v2) or `-1` (v1).
    pub quota_us: Option<u64>,
    /// Length of a period, never zero.
    pub period_us: u64,
}

impl CpuQuota {
    /// quota / period, when limited.
    pub fn cpus(&self) -> Option<f64> {
        self.quota_us.map(|q| q as f64 / self.period_us as f64)
    }

    /// The whole CPUs needed to use the quota: ceil(quota / period), at
    /// least 1; `None` when unlimited.
    pub fn whole_cpus(&self) -> Option<usize> {
        self.quota_us.map(|q| {
            let whole = q.div_ceil(self.period_us).max(1);
            usize::try_from(whole).unwrap_or(usize::MAX)
        })
    }

    /// Does this setting allow less CPU time than `other`? (Exact, without
    /// floating point.)
    pub fn is_tighter_than(&self, other: &CpuQuota) -> bool {
        match (self.quota_us, other.quota_us) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(a), Some(b)) => {
                let lhs = u128::from(a) * u128::from(other.period_us);
                let rhs = u128::from(b) * u128::from(self.period_us);
                lhs.cmp(&rhs) == Ordering::Less
            }
        }
    }
}

/// Parse the text of a cgroup v2 `cpu.max`: `max 100000`, `200000 100000`,
/// or a lone quota (the period then defaults to 100000).
pub fn parse_cpu_max(text: &str) -> Result<CpuQuota, String> {
    let mut words = text.split_whitespace();
    let quota = words.next().ok_or("cpu.max is empty")?;
    let period = match words.next() {
        Some(p) => parse_period(p)?,
        None => DEFAULT_PERIOD_US,
    };
    if words.next().is_some() {
        return Err(format!(
            "cpu.max has more than two fields: '{}'",
            text.trim()
        ));
    }
    let quota_us = if quota == "max" {
        None
    } else {
        match quota.parse::<u64>() {
            Ok(0) | Err(_) => return Err(format!("bad quota '{quota}' in cpu.max")),
            Ok(q) => Some(q),
        }
    };
    Ok(CpuQuota {
        quota_us,
        period_us: period,
    })
}

/// Parse the texts of cgroup v1 `cpu.cfs_quota_us` (`-1` means unlimited)
/// and `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Result<CpuQuota, String> {
    let period_us = parse_period(period.trim())?;
    let quota = quota.trim();
    let quota_us = match quota.parse::<i64>() {
        Ok(q) if q < 0 => None,
        Ok(0) | Err(_) => return Err(format!("bad cpu.cfs_quota_us '{quota}'")),
        Ok(q) => Some(q.unsigned_abs()),
    };
    Ok(CpuQuota {
        quota_us,
        period_us,
    })
}

fn parse_period(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("bad period '{text}'")),
    }
}

/// One limited cgroup met during the walk.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundLimit {
    /// The limit, in the facts model's shape.
    pub limit: CgroupCpuLimit,
    /// The setting as read.
    pub quota: CpuQuota,
    /// Human-readable evidence: which file said what.
    pub detail: String,
}

/// Result of [`scan_cgroup_cpu_limits`].
#[derive(Debug, Default)]
pub struct CgroupScan {
    /// Every limited cgroup found (v1 and v2, leaf and ancestors).
    pub found: Vec<FoundLimit>,
    /// Hierarchies checked that set no limit, for the evidence.
    pub unlimited: Vec<String>,
    /// Problems met.
    pub notes: Vec<String>,
}

impl CgroupScan {
    /// The tightest limit found, if any.
    pub fn tightest(&self) -> Option<&FoundLimit> {
        let mut best: Option<&FoundLimit> = None;
        for f in &self.found {
            best = match best {
                Some(b) if !f.quota.is_tighter_than(&b.quota) => Some(b),
                _ => Some(f),
            };
        }
        best
    }
}

/// Find every cgroup CPU bandwidth limit that applies to this process,
/// reading `proc/self/cgroup`, `proc/self/mountinfo` and the cgroup
/// filesystems below `root` (`/` in production).
pub fn scan_cgroup_cpu_limits(root: &Path) -> CgroupScan {
    let mut scan = CgroupScan::default();
    let Some(cgroup_text) = read_noting(&root.join("proc/self/cgroup"), &mut scan.notes) else {
        return scan;
    };
    let Some(mountinfo_text) = read_noting(&root.join("proc/self/mountinfo"), &mut scan.notes)
    else {
        return scan;
    };
    let entries = parse_cgroup_file(&cgroup_text, &mut scan.notes);
    let mounts = parse_mountinfo(&mountinfo_text, &mut scan.notes);

    if let Some(entry) = entries.iter().find(|e| e.is_v2()) {
        let candidates: Vec<&CgroupMount> = mounts.iter().filter(|m| m.version == 2).collect();
        match pick_mount(&candidates, &entry.path) {
            Some(mount) => walk(root, 2, mount, &entry.path, &mut scan),
            None => scan.notes.push(format!(
                "process is in cgroup v2 {} but no cgroup2 mount was found",
                entry.path
            )),
        }
    }
    if let Some(entry) = entries
        .iter()
        .find(|e| !e.is_v2() && e.has_cpu_controller())
    {
        let candidates: Vec<&CgroupMount> = mounts
            .iter()
            .filter(|m| m.version == 1 && m.controllers.iter().any(|c| c == "cpu"))
            .collect();
        match pick_mount(&candidates, &entry.path) {
            Some(mount) => walk(root, 1, mount, &entry.path, &mut scan),
            None => scan.notes.push(format!(
                "process is in cgroup v1 cpu {} but that hierarchy is not mounted",
                entry.path
            )),
        }
    }
    scan
}

/// The mount to read a cgroup path from: among several mounts of the same
/// hierarchy, the one whose root is the longest prefix of `cgroup_path`;
/// failing that, the first.
fn pick_mount<'a>(candidates: &[&'a CgroupMount], cgroup_path: &str) -> Option<&'a CgroupMount> {
    candidates
        .iter()
        .filter(|m| relative_to_root(cgroup_path, &m.root).is_some())
        .max_by_key(|m| m.root.len())
        .or_else(|| candidates.first())
        .copied()
}

/// `cgroup_path` relative to a mount's root, as path components; `None`
/// when the cgroup is not below that root.
fn relative_to_root<'a>(cgroup_path: &'a str, mount_root: &str) -> Option<Vec<&'a str>> {
    let root = mount_root.trim_end_matches('/');
    let rest = cgroup_path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    Some(parts)
}

/// Read the limit of every folder from the process's cgroup up to the mount
/// point.
fn walk(root: &Path, version: u8, mount: &CgroupMount, cgroup_path: &str, scan: &mut CgroupScan) {
    let mount_dir = root.join(mount.mount_point.trim_start_matches('/'));
    let parts = match relative_to_root(cgroup_path, &mount.root) {
        Some(parts) => parts,
        None => {
            scan.notes.push(format!(
                "cgroup v{version} path {cgroup_path} is outside the mounted root {} at {}; \
                 only the mount point was read",
                mount.root,
                mount_dir.display()
            ));
            Vec::new()
        }
    };
    let leaf = parts.iter().fold(mount_dir.clone(), |dir, p| dir.join(p));
    if !leaf.is_dir() {
        scan.notes.push(format!(
            "cgroup v{version} folder {} does not exist",
            leaf.display()
        ));
    }
    let mut found_here = false;
    // From the leaf up to the mount point (depth = parts.len() ..= 0).
    for depth in (0..=parts.len()).rev() {
        let dir = parts[..depth]
            .iter()
            .fold(mount_dir.clone(), |d, p| d.join(p));
        let hierarchy_path = hierarchy_path(&mount.root, &parts[..depth]);
        let read = if version == 2 {
            read_v2(&dir, &mut scan.notes)
        } else {
            read_v1(&dir, &mut scan.notes)
        };
        let Some((quota, file, raw)) = read else {
            continue;
        };
        let (Some(cpus), Some(whole)) = (quota.cpus(), quota.whole_cpus()) else {
            continue;
        };
        found_here = true;
        let detail = format!(
            "cgroup v{version} {raw} at {} ({cpus:.2} CPUs of bandwidth) → {}",
            dir.display(),
            super::cpu_count(whole)
        );
        scan.found.push(FoundLimit {
            limit: CgroupCpuLimit {
                version,
                cgroup_path: hierarchy_path,
                file,
                quota_us: quota.quota_us,
                period_us: quota.period_us,
                cpus: Some(cpus),
            },
            quota,
            detail,
        });
    }
    if !found_here {
        let what = if version == 2 {
            "cpu.max"
        } else {
            "cpu.cfs_quota_us"
        };
        let place = if leaf == mount_dir {
            format!("{}", leaf.display())
        } else {
            format!(
                "{} or its ancestors up to {}",
                leaf.display(),
                mount_dir.display()
            )
        };
        scan.unlimited.push(format!(
            "cgroup v{version}: no CPU limit ({what}) in {place}"
        ));
    }
}

/// The cgroup path (as `/proc/self/cgroup` would name it) of a folder below
/// a mount.
fn hierarchy_path(mount_root: &str, parts: &[&str]) -> String {
    let mut path = mount_root.trim_end_matches('/').to_owned();
    for p in parts {
        path.push('/');
        path.push_str(p);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// `cpu.max` of one folder: the setting, the file and its text for the
/// evidence. `None` when absent (controller not enabled, root cgroup) or
/// unreadable (noted).
fn read_v2(dir: &Path, notes: &mut Vec<String>) -> Option<(CpuQuota, PathBuf, String)> {
    let file = dir.join("cpu.max");
    let text = read_optional(&file, notes)?;
    match parse_cpu_max(&text) {
        Ok(q) => Some((q, file, format!("cpu.max {}", text.trim()))),
        Err(e) => {
            notes.push(format!("{}: {e}", file.display()));
            None
        }
    }
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` of one folder, like
/// [`read_v2`].
fn read_v1(dir: &Path, notes: &mut Vec<String>) -> Option<(CpuQuota, PathBuf, String)> {
    let quota_file = dir.join("cpu.cfs_quota_us");
    let quota_text = read_optional(&quota_file, notes)?;
    let period_file = dir.join("cpu.cfs_period_us");
    let period_text = match std::fs::read_to_string(&period_file) {
        Ok(t) => t,
        Err(e) => {
            notes.push(format!("cannot read {}: {e}", period_file.display()));
            return None;
        }
    };
    match parse_cfs(&quota_text, &period_text) {
        Ok(q) => Some((
            q,
            quota_file,
            format!(
                "cpu.cfs_quota_us {} / cpu.cfs_period_us {}",
                quota_text.trim(),
                period_text.trim()
            ),
        )),
        Err(e) => {
            notes.push(format!("{}: {e}", dir.display()));
            None
        }
    }
}

/// Read a file that may legitimately be absent: `None` without a note when
/// it does not exist, `None` with a note on any other error.
fn read_optional(path: &Path, notes: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            notes.push(format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Read a file that should exist, noting any failure.
fn read_noting(path: &Path, notes: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            notes.push(format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::host::fake_tree::tree;

    const V2_MOUNT: &str =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:5 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,nosuid shared:6 - cgroup cgroup rw,cpuset
";
    const V1_CGROUP: &str = "3:cpuset:/\n2:cpu,cpuacct:/slurm/job1\n1:name=systemd:/x\n0::/x\n";

    #[test]
    fn host_cgroup_file_parses_v1_and_v2_lines() {
        let mut notes = Vec::new();
        let entries = parse_cgroup_file(V1_CGROUP, &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(entries.len(), 4);
        assert!(entries[1].has_cpu_controller());
        assert!(!entries[0].has_cpu_controller());
        assert_eq!(entries[1].path, "/slurm/job1");
        assert!(entries[3].is_v2());
        assert!(!entries[2].is_v2());

        let entries = parse_cgroup_file("garbage\nx:y:/z\n0::/a:b\n", &mut notes);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, "/a:b");
    }

    #[test]
    fn host_mountinfo_keeps_cgroup_mounts_and_unescapes() {
        let mut notes = Vec::new();
        let text = format!(
            "{V1_MOUNTS}40 23 8:1 / / rw - ext4 /dev/sda1 rw\n\
             41 23 0:40 /a\\040b /mnt/my\\040cg rw - cgroup2 none rw\n\
             42 23 0:41 / - cgroup2\n\
             43 23 0:42 / - rw shared:9 - cgroup2 cgroup2 rw\n"
        );
        let mounts = parse_mountinfo(&text, &mut notes);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[4].mount_point, "-");
        assert_eq!(mounts[0].version, 2);
        assert_eq!(mounts[1].version, 1);
        assert_eq!(mounts[1].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(mounts[1].controllers, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[3].root, "/a b");
        assert_eq!(mounts[3].mount_point, "/mnt/my cg");
    }

    #[test]
    fn host_cpu_max_parses() {
        assert_eq!(
            parse_cpu_max("max 100000\n"),
            Ok(CpuQuota {
                quota_us: None,
                period_us: 100_000
            })
        );
        let q = parse_cpu_max("150000 100000").expect("valid");
        assert_eq!(q.quota_us, Some(150_000));
        assert_eq!(q.cpus(), Some(1.5));
        assert_eq!(q.whole_cpus(), Some(2));
        assert_eq!(parse_cpu_max("50000").map(|q| q.period_us), Ok(100_000));
        assert_eq!(
            parse_cpu_max("1000 100000").map(|q| q.whole_cpus()),
            Ok(Some(1))
        );
        for bad in [
            "",
            "max 0",
            "abc 100000",
            "-5 100000",
            "0 100000",
            "1 2 3",
            "max x",
        ] {
            assert!(parse_cpu_max(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn host_cfs_pair_parses() {
        let q = parse_cfs("200000\n", "100000\n").expect("valid");
        assert_eq!(q.quota_us, Some(200_000));
        assert_eq!(q.whole_cpus(), Some(2));
        assert_eq!(parse_cfs("-1", "100000").map(|q| q.quota_us), Ok(None));
        assert!(parse_cfs("x", "100000").is_err());
        assert!(parse_cfs("100000", "0").is_err());
        assert!(parse_cfs("100000", "").is_err());
        assert!(parse_cfs("0", "100000").is_err());
    }

    #[test]
    fn host_quota_tightness_is_exact() {
        let a = CpuQuota {
            quota_us: Some(150_000),
            period_us: 100_000,
        };
        let b = CpuQuota {
            quota_us: Some(300_000),
            period_us: 200_000,
        };
        let unlimited = CpuQuota {
            quota_us: None,
            period_us: 100_000,
        };
        assert!(!a.is_tighter_than(&b) && !b.is_tighter_than(&a));
        assert!(a.is_tighter_than(&unlimited));
        assert!(!unlimited.is_tighter_than(&a));
    }

    #[test]
    fn host_cgroup_v2_limit_in_leaf() {
        let dir = tree(&[
            ("proc/self/cgroup", "0::/user.slice/job\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/user.slice/cpu.max", "max 100000\n"),
            ("sys/fs/cgroup/user.slice/job/cpu.max", "150000 100000\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        let best = scan.tightest().expect("a limit");
        assert_eq!(best.limit.version, 2);
        assert_eq!(best.limit.cgroup_path, "/user.slice/job");
        assert_eq!(
            best.limit.file,
            dir.path().join("sys/fs/cgroup/user.slice/job/cpu.max")
        );
        assert_eq!(best.limit.quota_us, Some(150_000));
        assert_eq!(best.limit.period_us, 100_000);
        assert_eq!(best.limit.cpus, Some(1.5));
        assert_eq!(best.quota.whole_cpus(), Some(2));
        assert!(best
            .detail
            .starts_with("cgroup v2 cpu.max 150000 100000 at "));
        assert!(best.detail.ends_with("→ 2 CPUs"), "{}", best.detail);
    }

    #[test]
    fn host_cgroup_v2_tighter_limit_in_ancestor() {
        let dir = tree(&[
            ("proc/self/cgroup", "0::/a/b/c\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/a/cpu.max", "100000 100000\n"),
            ("sys/fs/cgroup/a/b/cpu.max", "max 100000\n"),
            ("sys/fs/cgroup/a/b/c/cpu.max", "400000 100000\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        assert_eq!(scan.found.len(), 2);
        let best = scan.tightest().expect("a limit");
        assert_eq!(best.limit.cgroup_path, "/a");
        assert_eq!(best.limit.quota_us, Some(100_000));
        assert_eq!(best.quota.whole_cpus(), Some(1));
    }

    #[test]
    fn host_cgroup_v2_max_is_unlimited() {
        let dir = tree(&[
            ("proc/self/cgroup", "0::/a\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/a/cpu.max", "max 100000\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        assert!(scan.tightest().is_none());
        assert_eq!(scan.unlimited.len(), 1);
        assert!(scan.unlimited[0].starts_with("cgroup v2: no CPU limit"));
    }

    #[test]
    fn host_cgroup_v1_quota() {
        let dir = tree(&[
            ("proc/self/cgroup", V1_CGROUP),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
            (
                "sys/fs/cgroup/cpu,cpuacct/slurm/job1/cpu.cfs_quota_us",
                "250000\n",
            ),
            (
                "sys/fs/cgroup/cpu,cpuacct/slurm/job1/cpu.cfs_period_us",
                "100000\n",
            ),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        // The v2 folder /x does not exist in this tree.
        assert_eq!(scan.notes.len(), 1, "{:?}", scan.notes);
        let best = scan.tightest().expect("a limit");
        assert_eq!(best.limit.version, 1);
        assert_eq!(best.limit.cgroup_path, "/slurm/job1");
        assert_eq!(
            best.limit.file,
            dir.path()
                .join("sys/fs/cgroup/cpu,cpuacct/slurm/job1/cpu.cfs_quota_us")
        );
        assert_eq!(best.limit.quota_us, Some(250_000));
        assert_eq!(best.limit.cpus, Some(2.5));
        assert_eq!(best.quota.whole_cpus(), Some(3));
        assert!(best
            .detail
            .contains("cpu.cfs_quota_us 250000 / cpu.cfs_period_us 100000"));
    }

    #[test]
    fn host_cgroup_v1_minus_one_is_unlimited() {
        let dir = tree(&[
            ("proc/self/cgroup", "2:cpu,cpuacct:/slurm/job1\n"),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
            (
                "sys/fs/cgroup/cpu,cpuacct/slurm/job1/cpu.cfs_quota_us",
                "-1\n",
            ),
            (
                "sys/fs/cgroup/cpu,cpuacct/slurm/job1/cpu.cfs_period_us",
                "100000\n",
            ),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        assert!(scan.tightest().is_none());
        assert_eq!(scan.unlimited.len(), 1);
    }

    #[test]
    fn host_cgroup_container_mount_root() {
        // Docker without a cgroup namespace: the container sees its own
        // cgroup mounted at /sys/fs/cgroup/cpu, and /proc/self/cgroup names
        // the full path. The mount root maps it to the mount point.
        let dir = tree(&[
            ("proc/self/cgroup", "5:cpu,cpuacct:/docker/abc123\n0::/docker/abc123\n"),
            (
                "proc/self/mountinfo",
                "700 690 0:30 /docker/abc123 /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu,cpuacct\n\
                 701 690 0:31 /docker/abc123 /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n",
            ),
            ("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "50000\n"),
            ("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
            ("sys/fs/cgroup/unified/cpu.max", "200000 100000\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        assert_eq!(scan.found.len(), 2);
        let best = scan.tightest().expect("a limit");
        assert_eq!(best.limit.version, 1);
        assert_eq!(best.limit.cgroup_path, "/docker/abc123");
        assert_eq!(best.limit.cpus, Some(0.5));
        assert_eq!(best.quota.whole_cpus(), Some(1));
        assert_eq!(
            best.limit.file,
            dir.path().join("sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        );
    }

    #[test]
    fn host_cgroup_path_outside_mount_root_reads_mount_point() {
        let dir = tree(&[
            ("proc/self/cgroup", "0::/../../elsewhere\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/cpu.max", "100000 100000\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert_eq!(scan.notes.len(), 1, "{:?}", scan.notes);
        assert!(scan.notes[0].contains("outside the mounted root"));
        let best = scan.tightest().expect("a limit");
        assert_eq!(best.limit.cgroup_path, "/");
    }

    #[test]
    fn host_cgroup_missing_files() {
        // Nothing at all: one note (no /proc/self/cgroup), nothing read.
        let empty = tree(&[]);
        let scan = scan_cgroup_cpu_limits(empty.path());
        assert!(scan.found.is_empty());
        assert_eq!(scan.notes.len(), 1, "{:?}", scan.notes);

        // No mountinfo.
        let dir = tree(&[("proc/self/cgroup", "0::/a\n")]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.found.is_empty());
        assert!(scan.notes[0].contains("mountinfo"), "{:?}", scan.notes);

        // No cgroup2 mount for a v2 entry.
        let dir = tree(&[
            ("proc/self/cgroup", "0::/a\n"),
            (
                "proc/self/mountinfo",
                "40 23 8:1 / / rw - ext4 /dev/sda1 rw\n",
            ),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.found.is_empty());
        assert!(
            scan.notes[0].contains("no cgroup2 mount"),
            "{:?}",
            scan.notes
        );

        // Folder exists but the cpu controller is not enabled: no cpu.max
        // anywhere is normal, not a problem.
        let dir = tree(&[
            ("proc/self/cgroup", "0::/a\n"),
            ("proc/self/mountinfo", V2_MOUNT),
            ("sys/fs/cgroup/a/cgroup.procs", "1\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.found.is_empty());
        assert!(scan.notes.is_empty(), "{:?}", scan.notes);
        assert_eq!(scan.unlimited.len(), 1);

        // v1 quota without its period.
        let dir = tree(&[
            ("proc/self/cgroup", "2:cpu,cpuacct:/\n"),
            ("proc/self/mountinfo", V1_MOUNTS),
            ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n"),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.found.is_empty());
        assert!(
            scan.notes[0].contains("cpu.cfs_period_us"),
            "{:?}",
            scan.notes
        );
    }

    #[test]
    fn host_cgroup_garbage_contents() {
        let dir = tree(&[
            ("proc/self/cgroup", "\u{0}\u{1}garbage\n0::/a/b\n::::\n"),
            (
                "proc/self/mountinfo",
                "nonsense line\n- cgroup2\n30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            ),
            ("sys/fs/cgroup/a/cpu.max", "lots of cpus please\n"),
            (
                "sys/fs/cgroup/a/b/cpu.max",
                "\u{feff}\u{0}99999999999999999999999 1\n",
            ),
        ]);
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.found.is_empty());
        assert!(scan.notes.len() >= 4, "{:?}", scan.notes);

        // Non-UTF-8 bytes: a read error, noted.
        let dir = tree(&[
            ("proc/self/cgroup", "0::/a\n"),
            ("proc/self/mountinfo", V2_MOUNT),
        ]);
        std::fs::create_dir_all(dir.path().join("sys/fs/cgroup/a")).expect("mkdir");
        std::fs::write(
            dir.path().join("sys/fs/cgroup/a/cpu.max"),
            [0xff, 0xfe, b'1'],
        )
        .expect("write");
        let scan = scan_cgroup_cpu_limits(dir.path());
        assert!(scan.found.is_empty());
        assert_eq!(scan.notes.len(), 1, "{:?}", scan.notes);
    }
}
