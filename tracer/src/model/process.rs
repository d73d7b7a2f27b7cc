//! Processes as a trace shows them: who forked whom, what each exec'd, how
//! long the dynamic loader took and what it did, and when each ended.
//!
//! Built in one pass over the events ([`ProcessTable::add`]); memory grows
//! with the number of processes, libraries and distinct paths looked up,
//! never with the number of events.

use crate::saturating::SaturatingSum as _;
use std::collections::BTreeMap;

use super::{
    FastMap,
    cache::CacheFiles,
    io::IoTotals,
    path::{self, absolute},
};
use crate::trace::{Event, LoaderPhase, ThreadTimes, TracerCost, event::Bytes};

/// A process is a pid *and* a start time: pids are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    pub pid: u32,
    /// CLOCK_BOOTTIME ns: the fork, or the start read from /proc.
    pub start_ns: u64,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub key: ProcessKey,
    /// The parent's pid, and the parent itself when the trace knows it.
    pub ppid: u32,
    pub parent: Option<ProcessKey>,
    /// Already running when tracing started (seeded from /proc).
    pub seeded: bool,
    /// What it was running when first seen, before any exec in the trace.
    pub initial_exe: Option<Bytes>,
    pub cgroup_id: u64,
    pub execs: Vec<Exec>,
    /// When the last thread exited, and the wait status.
    pub end_ns: Option<u64>,
    pub exit_status: Option<i32>,
    pub io: IoTotals,
    /// Summed over its threads (those whose times the trace has).
    pub times: ThreadTimes,
    /// Its children in the trace (indexes into the table).
    children: Vec<usize>,
    /// When its parent exited while it still ran: from then on the kernel
    /// has reparented it (to init or a subreaper).
    pub orphaned_ns: Option<u64>,
}

impl Process {
    /// A process first seen with `key`, knowing nothing else yet.
    fn new(key: ProcessKey, ppid: u32, parent: Option<ProcessKey>, cgroup_id: u64) -> Process {
        Process {
            key,
            ppid,
            parent,
            seeded: false,
            initial_exe: None,
            cgroup_id,
            execs: Vec::new(),
            end_ns: None,
            exit_status: None,
            io: IoTotals::default(),
            times: ThreadTimes::default(),
            children: Vec::new(),
            orphaned_ns: None,
        }
    }

    /// The program it ran last.
    pub fn exe(&self) -> Option<&[u8]> {
        self.execs.last().map(|e| e.filename.as_slice()).or(self.initial_exe.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct Exec {
    pub ts_ns: u64,
    pub filename: Bytes,
    /// Device and inode of the executable (0 when the kernel gave none).
    pub dev: u32,
    pub ino: u64,
    pub argv: Vec<Bytes>,
    /// The dynamic loader's variables in its environment.
    pub loader_env: Vec<(Bytes, Bytes)>,
    /// The dynamic loader's run, when the loader probes saw it.
    pub loader: Option<LoaderRun>,
    /// Files mapped executable after the loader was done (`dlopen`), by
    /// the kernel's name, once each, in order.
    pub late_libraries: Vec<Bytes>,
    /// Its stat-family lookups outside the loader (`record --probe stat`).
    pub lookups: PathLookups,
    /// Cache files it looked for and wrote, from its opens outside the loader.
    pub caches: CacheFiles,
}

/// The stat, access and readlink calls of one exec outside its loader run:
/// how interpreters and shells search their paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathLookups {
    pub calls: u64,
    pub ns: u64,
    /// Lookups that found nothing (`ENOENT`, `ENOTDIR`), by (directory,
    /// name) of the absolute path.
    pub failed: BTreeMap<(Bytes, Bytes), FailedLookups>,
    /// The others (found something, or failed otherwise), by directory.
    pub found: BTreeMap<Bytes, u64>,
}

impl Exec {
    /// The loader of this exec reached `phase` at `ts_ns`.
    fn loader_reached(&mut self, phase: LoaderPhase, ts_ns: u64) {
        match phase {
            LoaderPhase::Start => self.loader = Some(LoaderRun { start_ns: ts_ns, ..LoaderRun::default() }),
            LoaderPhase::Done => {
                if let Some(run) = self.loader.as_mut().filter(|r| r.done_ns.is_none()) {
                    run.done_ns = Some(ts_ns);
                    run.open_fds.clear();
                }
            }
            LoaderPhase::Entry => {
                if let Some(run) = self.loader.as_mut().filter(|r| r.done_ns.is_some()) {
                    run.entry_ns.get_or_insert(ts_ns);
                }
            }
        }
    }
}

/// What glibc's dynamic loader did for one exec, between its entry point
/// and `_dl_start_user` (libraries mapped and relocated).
#[derive(Debug, Clone, Default)]
pub struct LoaderRun {
    pub start_ns: u64,
    /// None when the trace ends (or the process dies) inside the loader.
    pub done_ns: Option<u64>,
    /// When the initialisers had run and the program's entry point was
    /// next (None without that probe, or if it never got there).
    pub entry_ns: Option<u64>,
    /// Opens that failed: the library search probing directories.
    pub failed_lookups: u64,
    /// Time spent in those failed opens.
    pub search_ns: u64,
    /// Failed lookups by (directory probed, file name sought).
    pub lookups: BTreeMap<(Bytes, Bytes), FailedLookups>,
    /// Time in successful opens and in mmaps.
    pub open_ns: u64,
    pub map_ns: u64,
    /// Successful opens and mmaps (for the tracer's share of the time).
    pub opens: u64,
    pub maps: u64,
    /// Libraries mapped executable, in load order.
    pub libraries: Vec<Library>,
    /// Files the loader opened, by fd, until it is done.
    open_fds: FastMap<i64, OpenedFile>,
}

/// Failed opens of one candidate path: the library search probing a
/// directory that does not hold the library.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailedLookups {
    pub count: u64,
    pub ns: u64,
}

/// A file the loader opened: what it cost so far, and the library it
/// became once mapped executable.
#[derive(Debug, Clone)]
struct OpenedFile {
    path: Bytes,
    ns: u64,
    library: Option<usize>,
}

impl LoaderRun {
    /// An mmap of `fd` by the loader: a library once it maps executable.
    fn add_map(&mut self, map: Map<'_>) {
        let Map { fd, mapped, prot, len, duration_ns, dev, ino } = map;
        let Some(opened) = self.open_fds.get_mut(&i64::from(fd)) else { return };
        opened.ns = opened.ns.saturating_add(duration_ns);
        let exec_bytes = if prot & PROT_EXEC != 0 { len } else { 0 };
        match (opened.library, mapped) {
            (Some(index), _) => {
                let library = &mut self.libraries[index];
                library.exec_bytes = library.exec_bytes.saturating_add(exec_bytes);
                library.load_ns = library.load_ns.saturating_add(duration_ns);
            }
            (None, Some(mapped)) if exec_bytes > 0 => {
                opened.library = Some(self.libraries.len());
                self.libraries.push(Library {
                    path: opened.path.clone(),
                    mapped_path: mapped.clone(),
                    dev,
                    ino,
                    exec_bytes,
                    load_ns: opened.ns,
                });
            }
            _ => {}
        }
    }

    pub fn total_ns(&self) -> Option<u64> {
        self.done_ns.map(|done| done.saturating_sub(self.start_ns))
    }

    /// What tracing its calls added to the run, at `cost` per call (never
    /// more than the run took); None when the run did not finish.
    pub fn tracer_ns(&self, cost: &TracerCost) -> Option<u64> {
        let added = [
            self.failed_lookups.saturating_mul(cost.failed_open_ns),
            self.opens.saturating_mul(cost.open_ns),
            self.maps.saturating_mul(cost.mmap_ns),
        ];
        Some(added.into_iter().saturating_sum().min(self.total_ns()?))
    }

    /// The libraries' initialisers (constructors), between relocation and
    /// the program's entry point.
    pub fn init_ns(&self) -> Option<u64> {
        Some(self.entry_ns?.saturating_sub(self.done_ns?))
    }

    /// Time that is neither searching nor opening and mapping: relocation,
    /// symbol lookup and the loader's own setup.
    pub fn rest_ns(&self) -> Option<u64> {
        self.total_ns().map(|total| {
            total.saturating_sub([self.search_ns, self.open_ns, self.map_ns].into_iter().saturating_sum())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The path the loader opened.
    pub path: Bytes,
    /// The kernel's name for the mapped file (symlinks resolved).
    pub mapped_path: Bytes,
    /// Device and inode of the mapped file.
    pub dev: u32,
    pub ino: u64,
    /// Bytes mapped executable.
    pub exec_bytes: u64,
    /// Time in its open and in the mmaps of that fd.
    pub load_ns: u64,
}

const PROT_EXEC: u32 = 4;

/// An mmap the loader made, as `LoaderRun::add_map` needs it.
struct Map<'a> {
    fd: i32,
    mapped: Option<&'a Bytes>,
    prot: u32,
    len: u64,
    duration_ns: u64,
    dev: u32,
    ino: u64,
}

/// The (directory, name) key of a path.
fn split_path(path: &[u8]) -> (Bytes, Bytes) {
    let (dir, name) = path::split(path);
    (dir.to_vec(), name.to_vec())
}

/// What a failed lookup says: nothing is there (`ENOENT`, or `ENOTDIR`
/// for a path through a file). Other errors (readlink's `EINVAL` on a
/// file that is no link, access's `EACCES`) found something.
fn found_nothing(ret: i64) -> bool {
    ret == -2 || ret == -20
}

/// All processes of a trace, in the order they were first seen.
#[derive(Debug, Default)]
pub struct ProcessTable {
    pub processes: Vec<Process>,
    /// pid -> index of the live process with that pid.
    live: FastMap<u32, usize>,
    /// pid -> index of the latest process with that pid, live or not.
    latest: FastMap<u32, usize>,
    /// Timestamp of the last event seen.
    pub last_ts: u64,
}

impl ProcessTable {
    /// The live process with `pid`, created if the trace never showed it
    /// start (it started before tracing and was not seeded).
    fn live_process(&mut self, pid: u32, ts_ns: u64, cgroup_id: u64) -> &mut Process {
        let index = match self.live.get(&pid) {
            Some(index) => *index,
            None => self.start(Process::new(ProcessKey { pid, start_ns: ts_ns }, 0, None, cgroup_id)),
        };
        &mut self.processes[index]
    }

    fn start(&mut self, process: Process) -> usize {
        let index = self.processes.len();
        if let Some(parent) = process.parent.and_then(|key| self.live.get(&key.pid).copied()) {
            self.processes[parent].children.push(index);
        }
        // A pid seen again without an exit in between: the old process's
        // exit was lost. The new one replaces it.
        self.live.insert(process.key.pid, index);
        self.latest.insert(process.key.pid, index);
        self.processes.push(process);
        index
    }

    pub fn add(&mut self, event: &Event) {
        match event {
            Event::Process { pid, ppid, start_ns, cgroup_id, exe, .. } => {
                let parent = self.live.get(ppid).map(|i| self.processes[*i].key);
                self.start(Process {
                    seeded: true,
                    initial_exe: exe.clone(),
                    ..Process::new(ProcessKey { pid: *pid, start_ns: *start_ns }, *ppid, parent, *cgroup_id)
                });
            }
            Event::Fork { common, child_pid, .. } if child_pid == &common.pid => {
                // A new thread (CLONE_THREAD): nothing to track per process.
            }
            Event::Fork { common, child_pid, .. } => {
                let parent = self.live.get(&common.pid).map(|i| &self.processes[*i]);
                let initial_exe = parent.and_then(Process::exe).map(<[u8]>::to_vec);
                let key = ProcessKey { pid: *child_pid, start_ns: common.ts_ns };
                self.start(Process {
                    initial_exe,
                    ..Process::new(key, common.pid, parent.map(|p| p.key), common.cgroup_id)
                });
            }
            Event::Exec { common, filename, argv, dev, ino, loader_env, .. } => {
                let process = self.live_process(common.pid, common.ts_ns, common.cgroup_id);
                process.cgroup_id = common.cgroup_id;
                process.execs.push(Exec {
                    ts_ns: common.ts_ns,
                    filename: filename.clone(),
                    dev: *dev,
                    ino: *ino,
                    argv: argv.clone(),
                    loader_env: loader_env.clone(),
                    loader: None,
                    late_libraries: Vec::new(),
                    lookups: PathLookups::default(),
                    caches: CacheFiles::default(),
                });
            }
            Event::Loader { common, phase } => {
                let process = self.live_process(common.pid, common.ts_ns, common.cgroup_id);
                if let Some(exec) = process.execs.last_mut() {
                    exec.loader_reached(*phase, common.ts_ns);
                }
            }
            Event::Open { common, path, dir, flags, ret, duration_ns, .. } => {
                if let Some(exec) = self.exec_outside_loader(common.pid) {
                    exec.caches.open(common.ts_ns, &absolute(path, dir.as_deref()), *flags, *ret);
                }
                if let Some(run) = self.running_loader(common.pid) {
                    if *ret < 0 {
                        run.failed_lookups += 1;
                        run.search_ns = run.search_ns.saturating_add(*duration_ns);
                        let lookups = run.lookups.entry(split_path(path)).or_default();
                        lookups.count += 1;
                        lookups.ns = lookups.ns.saturating_add(*duration_ns);
                    } else {
                        run.open_ns = run.open_ns.saturating_add(*duration_ns);
                        run.opens += 1;
                        let opened = OpenedFile { path: path.clone(), ns: *duration_ns, library: None };
                        run.open_fds.insert(*ret, opened);
                    }
                }
            }
            Event::Stat { common, path, dir, ret, duration_ns, .. } => {
                if let Some(exec) = self.exec_outside_loader(common.pid) {
                    let lookups = &mut exec.lookups;
                    lookups.calls += 1;
                    lookups.ns = lookups.ns.saturating_add(*duration_ns);
                    let (dir, name) = split_path(&absolute(path, dir.as_deref()));
                    if found_nothing(*ret) {
                        let failed = lookups.failed.entry((dir, name)).or_default();
                        failed.count += 1;
                        failed.ns = failed.ns.saturating_add(*duration_ns);
                    } else {
                        *lookups.found.entry(dir).or_default() += 1;
                    }
                }
            }
            Event::Mmap { common, path, fd, prot, len, duration_ns, dev, ino, .. } => {
                if let Some(path) = path
                    && prot & PROT_EXEC != 0
                    && let Some(exec) = self.exec_outside_loader(common.pid)
                    && exec.loader.as_ref().is_some_and(|run| run.done_ns.is_some())
                    && !exec.late_libraries.contains(path)
                {
                    exec.late_libraries.push(path.clone());
                }
                if let Some(run) = self.running_loader(common.pid) {
                    run.map_ns = run.map_ns.saturating_add(*duration_ns);
                    run.maps += 1;
                    let map = Map {
                        fd: *fd,
                        mapped: path.as_ref(),
                        prot: *prot,
                        len: *len,
                        duration_ns: *duration_ns,
                        dev: *dev,
                        ino: *ino,
                    };
                    run.add_map(map);
                }
            }
            Event::Exit { common, status, group_dead } => {
                if *group_dead && let Some(index) = self.live.remove(&common.pid) {
                    let process = &mut self.processes[index];
                    process.end_ns = Some(common.ts_ns);
                    process.exit_status = Some(*status);
                    for child in std::mem::take(&mut process.children) {
                        let child = &mut self.processes[child];
                        if child.end_ns.is_none() {
                            child.orphaned_ns = Some(common.ts_ns);
                        }
                    }
                }
            }
            Event::Sched { common, times } => {
                self.live_process(common.pid, common.ts_ns, common.cgroup_id).times.add(times);
            }
            Event::FileRead { common, .. } => {
                // Written when recording stops, summed over the whole
                // recording: the process may have exited long before.
                let index = match self.latest.get(&common.pid) {
                    Some(index) => *index,
                    None => self.start(Process::new(
                        ProcessKey { pid: common.pid, start_ns: common.ts_ns },
                        0,
                        None,
                        0,
                    )),
                };
                self.processes[index].io.add(event);
            }
            Event::PageCache { common, .. } | Event::BlockIo { common, .. } => {
                self.live_process(common.pid, common.ts_ns, common.cgroup_id).io.add(event);
            }
            Event::ExecFailed { .. }
            | Event::Cgroup { .. }
            | Event::Binary { .. }
            | Event::StorePath { .. }
            | Event::StoreGraph { .. }
            | Event::SystemdAnalyze { .. }
            | Event::Stats(_) => {}
        }
        self.last_ts = self.last_ts.max(event.ts_ns());
    }

    /// The current exec of the live process `pid`.
    fn live_exec(&mut self, pid: u32) -> Option<&mut Exec> {
        let index = *self.live.get(&pid)?;
        self.processes[index].execs.last_mut()
    }

    /// The current exec of the live process `pid`, unless its loader is
    /// running (what happens then is the loader's).
    fn exec_outside_loader(&mut self, pid: u32) -> Option<&mut Exec> {
        let exec = self.live_exec(pid)?;
        let loading = exec.loader.as_ref().is_some_and(|run| run.done_ns.is_none());
        (!loading).then_some(exec)
    }

    /// The loader run of `pid`'s current exec, if the loader is running.
    fn running_loader(&mut self, pid: u32) -> Option<&mut LoaderRun> {
        let run = self.live_exec(pid)?.loader.as_mut()?;
        run.done_ns.is_none().then_some(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Common, OpenSyscall, StatSyscall, event::text};

    fn common(ts_ns: u64, pid: u32) -> Common {
        Common { ts_ns, pid, tid: pid, cgroup_id: 7 }
    }

    fn fork(ts: u64, parent: u32, child: u32) -> Event {
        Event::Fork { common: common(ts, parent), child_pid: child, child_tid: child, clone_flags: 0x11 }
    }

    fn exec(ts: u64, pid: u32, filename: &str) -> Event {
        Event::Exec {
            common: common(ts, pid),
            old_tid: pid,
            filename: filename.into(),
            argv: vec![filename.into()],
            argv_truncated: false,
            dev: 0,
            ino: 0,
            loader_env: Vec::new(),
            env_truncated: false,
        }
    }

    fn exit(ts: u64, pid: u32, code: i32) -> Event {
        Event::Exit { common: common(ts, pid), status: code << 8, group_dead: true }
    }

    fn open(ts: u64, pid: u32, path: &str, ret: i64, duration_ns: u64) -> Event {
        Event::Open {
            common: common(ts, pid),
            syscall: OpenSyscall::Openat,
            dfd: -100,
            path: path.into(),
            dir: None,
            dir_truncated: false,
            flags: 0,
            mode: 0,
            ret,
            duration_ns,
            ino: 0,
            dev: 0,
        }
    }

    fn stat(ts: u64, pid: u32, path: &str, dir: Option<&str>, ret: i64) -> Event {
        Event::Stat {
            common: common(ts, pid),
            syscall: StatSyscall::Newfstatat,
            dfd: -100,
            path: path.into(),
            dir: dir.map(Into::into),
            dir_truncated: false,
            flags: 0,
            mode: 0,
            ret,
            duration_ns: 10,
        }
    }

    /// Lookups outside the loader count per exec; the loader's own (its
    /// `access("/etc/ld.so.preload")`) do not.
    #[test]
    fn stat_lookups_count_per_exec_outside_the_loader() {
        let t = table(&[
            exec(1_000, 20, "/bin/sh"),
            stat(1_100, 20, "/usr/local/bin/python3", None, -2),
            exec(2_000, 20, "/usr/bin/python3"),
            Event::Loader { common: common(2_100, 20), phase: LoaderPhase::Start },
            stat(2_200, 20, "/etc/ld.so.preload", None, -2),
            Event::Loader { common: common(2_300, 20), phase: LoaderPhase::Done },
            stat(2_400, 20, "/missing/a", None, -2),
            stat(2_500, 20, "/missing/a", None, -2),
            stat(2_600, 20, "os.py", Some("/usr/lib/python3"), -20),
            stat(2_700, 20, "/usr/lib/python3/os.py", None, 0),
        ]);
        let lookups: Vec<&PathLookups> = t.processes[0].execs.iter().map(|e| &e.lookups).collect();
        let failed = |l: &PathLookups| -> Vec<(String, String, u64)> {
            l.failed.iter().map(|((d, n), f)| (text(d), text(n), f.count)).collect()
        };
        assert_eq!(
            (lookups[0].calls, failed(lookups[0])),
            (1, vec![("/usr/local/bin".into(), "python3".into(), 1)])
        );
        assert_eq!((lookups[1].calls, lookups[1].ns), (4, 40));
        assert_eq!(
            failed(lookups[1]),
            [("/missing".into(), "a".into(), 2), ("/usr/lib/python3".into(), "os.py".into(), 1)]
        );
        assert_eq!(lookups[1].found, BTreeMap::from([(b"/usr/lib/python3".to_vec(), 1)]));
    }

    fn mmap(ts: u64, pid: u32, path: &str, fd: i32, prot: u32, len: u64) -> Event {
        Event::Mmap {
            common: common(ts, pid),
            path: Some(path.into()),
            path_truncated: false,
            addr: 0x7000_0000,
            len,
            offset: 0,
            prot,
            flags: 2,
            fd,
            dev: 1,
            ino: 2,
            duration_ns: 100,
        }
    }

    fn table(events: &[Event]) -> ProcessTable {
        let mut table = ProcessTable::default();
        for event in events {
            table.add(event);
        }
        table
    }

    #[test]
    fn pid_reuse_makes_two_processes() {
        let t = table(&[
            fork(10, 1, 50),
            exit(20, 50, 0),
            fork(30, 1, 50),
            exec(31, 50, "/bin/b"),
            exit(40, 50, 2),
        ]);
        let keys: Vec<_> =
            t.processes.iter().map(|p| (p.key, p.exit_status, p.exe().map(<[u8]>::to_vec))).collect();
        assert_eq!(
            keys,
            [
                (ProcessKey { pid: 50, start_ns: 10 }, Some(0), None),
                (ProcessKey { pid: 50, start_ns: 30 }, Some(2 << 8), Some(b"/bin/b".to_vec())),
            ]
        );
    }

    #[test]
    fn exec_without_fork_and_processes_that_outlive_the_trace() {
        // A process that started before the trace and was not seeded execs twice.
        let t = table(&[exec(5, 9, "/bin/sh"), exec(8, 9, "/usr/bin/python3"), fork(9, 9, 10)]);
        assert_eq!(t.processes.len(), 2);
        let first = &t.processes[0];
        assert_eq!((first.key.start_ns, first.end_ns, first.seeded), (5, None, false));
        assert_eq!(
            first.execs.iter().map(|e| e.filename.as_slice()).collect::<Vec<_>>(),
            [&b"/bin/sh"[..], b"/usr/bin/python3"]
        );
        // The child inherits the program and knows its parent.
        let child = &t.processes[1];
        assert_eq!(
            (child.parent, child.ppid, child.exe()),
            (Some(first.key), 9, Some(&b"/usr/bin/python3"[..]))
        );
    }

    #[test]
    fn children_outliving_their_parent_are_orphaned() {
        let t = table(&[
            fork(10, 1, 2),
            fork(20, 2, 3),
            fork(21, 2, 4),
            exit(30, 4, 0),
            exit(40, 2, 0),
            exit(50, 3, 0),
        ]);
        let orphaned: Vec<_> = t.processes.iter().map(|p| (p.key.pid, p.orphaned_ns)).collect();
        assert_eq!(orphaned, [(2, None), (3, Some(40)), (4, None)]);
    }

    #[test]
    fn seeded_processes_keep_their_start_and_parent() {
        let seeded = Event::Process {
            ts_ns: 100,
            pid: 3,
            ppid: 1,
            start_ns: 42,
            cgroup_id: 5,
            exe: Some(b"/usr/lib/systemd/systemd-journald".to_vec()),
            argv: vec![],
        };
        let t = table(&[seeded, exit(200, 3, 0)]);
        let p = &t.processes[0];
        assert_eq!(
            (p.key, p.seeded, p.ppid, p.end_ns),
            (ProcessKey { pid: 3, start_ns: 42 }, true, 1, Some(200))
        );
    }

    #[test]
    fn loader_runs_collect_lookups_and_libraries() {
        let t = table(&[
            exec(1_000, 20, "/bin/app"),
            Event::Loader { common: common(1_100, 20), phase: LoaderPhase::Start },
            open(1_200, 20, "/opt/lib/glibc-hwcaps/x86-64-v3/libz.so.1", -2, 300),
            open(1_300, 20, "/opt/lib/libz.so.1", 3, 500),
            mmap(1_400, 20, "/opt/lib/libz.so.1.3", 3, 1, 8192),
            mmap(1_500, 20, "/opt/lib/libz.so.1.3", 3, 5, 4096),
            Event::Loader { common: common(2_100, 20), phase: LoaderPhase::Done },
            Event::Loader { common: common(2_150, 20), phase: LoaderPhase::Entry },
            // After the loader: not the loader's.
            open(2_200, 20, "/etc/app.conf", -2, 50),
        ]);
        let run = t.processes[0].execs[0].loader.as_ref().unwrap();
        assert_eq!(run.total_ns(), Some(1_000));
        assert_eq!((run.failed_lookups, run.search_ns, run.open_ns, run.map_ns), (1, 300, 500, 200));
        assert_eq!(run.rest_ns(), Some(0));
        assert_eq!(run.init_ns(), Some(50));
        let key = (b"/opt/lib/glibc-hwcaps/x86-64-v3".to_vec(), b"libz.so.1".to_vec());
        assert_eq!(run.lookups.get(&key), Some(&FailedLookups { count: 1, ns: 300 }));
        assert_eq!(
            run.libraries,
            [Library {
                path: b"/opt/lib/libz.so.1".to_vec(),
                mapped_path: b"/opt/lib/libz.so.1.3".to_vec(),
                dev: 1,
                ino: 2,
                exec_bytes: 4096,
                // The open and both maps of its fd.
                load_ns: 700,
            }]
        );
    }
}
