//! What already existed when tracing started: processes from /proc and the
//! cgroup v2 tree, so later events from them are attributed correctly.
//! Read after the probes are attached, so nothing falls between the two.

use std::{
    collections::HashMap,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Where the unified (v2) cgroup hierarchy is mounted, if anywhere.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // "36 25 0:31 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw"
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split(' ').nth(4)?))
    })
}

/// A cgroup directory: its id is the directory's inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    pub id: u64,
    pub level: u32,
    /// Relative to the hierarchy root, starting with `/`.
    pub path: Vec<u8>,
}

/// The id of a cgroup given by its path relative to the root (or absolute
/// below the mount point).
pub fn cgroup_id(root: &Path, path: &Path) -> std::io::Result<CgroupDir> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let meta = fs::metadata(root.join(relative))?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a cgroup directory"));
    }
    let level = relative.components().count() as u32;
    let mut display = b"/".to_vec();
    display.extend_from_slice(relative.as_os_str().as_bytes());
    Ok(CgroupDir { id: meta.ino(), level, path: display })
}

/// Every cgroup directory below `root`, depth first.
pub fn cgroups(root: &Path) -> Vec<CgroupDir> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let Ok(dir) = cgroup_id(root, &relative) else { continue };
        out.push(dir);
        let Ok(entries) = fs::read_dir(root.join(&relative)) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(relative.join(entry.file_name()));
            }
        }
    }
    out
}

/// A process found in /proc.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// CLOCK_BOOTTIME nanoseconds.
    pub start_ns: u64,
    pub exe: Option<Vec<u8>>,
    pub argv: Vec<Vec<u8>>,
    /// Cgroup v2 path relative to the root, starting with `/`.
    pub cgroup: Option<Vec<u8>>,
}

/// Parses ppid and start time (in clock ticks) out of /proc/PID/stat, whose
/// second field (comm) may contain spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // Fields counted from 3 (state); ppid is 4, starttime is 22.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn read_process(pid: u32, ticks_per_second: u64) -> Option<ProcInfo> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let (ppid, start_ticks) = parse_stat(&fs::read_to_string(dir.join("stat")).ok()?)?;
    let exe = fs::read_link(dir.join("exe")).ok().map(|p| p.as_os_str().as_bytes().to_vec());
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    let cmdline = cmdline.strip_suffix(&[0]).unwrap_or(&cmdline);
    let argv = if cmdline.is_empty() {
        Vec::new()
    } else {
        cmdline.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
    };
    let cgroup = fs::read(dir.join("cgroup")).ok().and_then(|text| {
        text.split(|b| *b == b'\n').find_map(|l| l.strip_prefix(b"0::").map(<[u8]>::to_vec))
    });
    Some(ProcInfo { pid, ppid, start_ns: start_ticks * 1_000_000_000 / ticks_per_second, exe, argv, cgroup })
}

/// Every process in /proc (threads are not listed separately).
pub fn processes() -> Vec<ProcInfo> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<ProcInfo> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_process(pid, ticks))
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// `roots` and all their descendants among `procs`.
pub fn descendants(procs: &[ProcInfo], roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    let mut stack = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if out.contains(&pid) {
            continue;
        }
        out.push(pid);
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_stat(stat), Some((7, 12345)));
    }

    #[test]
    fn finds_this_process_and_its_parent() {
        let procs = processes();
        let me = std::process::id();
        let mine = procs.iter().find(|p| p.pid == me).expect("own process listed");
        // SAFETY: no preconditions.
        assert_eq!(mine.ppid, unsafe { libc::getppid() } as u32);
        assert_eq!(mine.exe.as_deref(), Some(std::env::current_exe().unwrap().as_os_str().as_bytes()));
        assert!(descendants(&procs, &[mine.ppid]).contains(&me));
    }

    #[test]
    fn the_cgroup_root_is_level_zero() {
        let root = cgroup2_root().expect("cgroup2 mounted");
        let dir = cgroup_id(&root, Path::new("/")).unwrap();
        assert_eq!((dir.level, dir.path.as_slice()), (0, &b"/"[..]));
        assert_eq!(cgroups(&root)[0], dir);
    }
}
