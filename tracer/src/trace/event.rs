//! The events a trace holds, as the rest of nixtrace sees them: decoded,
//! with strings resolved. Kernel records become these in `record::decode`;
//! the writer and reader turn them into bytes and back.

use crate::saturating::SaturatingSum as _;
use std::collections::BTreeMap;

/// Fields every kernel event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Common {
    /// CLOCK_BOOTTIME, nanoseconds.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
}

/// Which open-family syscall an open came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenSyscall {
    Open = 1,
    Openat = 2,
    Openat2 = 3,
}

impl OpenSyscall {
    pub fn name(self) -> &'static str {
        match self {
            OpenSyscall::Open => "open",
            OpenSyscall::Openat => "openat",
            OpenSyscall::Openat2 => "openat2",
        }
    }
}

/// Which stat-family syscall a lookup came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatSyscall {
    Stat = 1,
    Lstat = 2,
    Newfstatat = 3,
    Statx = 4,
    Access = 5,
    Faccessat = 6,
    Faccessat2 = 7,
    Readlink = 8,
    Readlinkat = 9,
}

impl StatSyscall {
    pub const ALL: [StatSyscall; 9] = [
        StatSyscall::Stat,
        StatSyscall::Lstat,
        StatSyscall::Newfstatat,
        StatSyscall::Statx,
        StatSyscall::Access,
        StatSyscall::Faccessat,
        StatSyscall::Faccessat2,
        StatSyscall::Readlink,
        StatSyscall::Readlinkat,
    ];

    /// As strace names it.
    pub fn name(self) -> &'static str {
        match self {
            StatSyscall::Stat => "stat",
            StatSyscall::Lstat => "lstat",
            StatSyscall::Newfstatat => "newfstatat",
            StatSyscall::Statx => "statx",
            StatSyscall::Access => "access",
            StatSyscall::Faccessat => "faccessat",
            StatSyscall::Faccessat2 => "faccessat2",
            StatSyscall::Readlink => "readlink",
            StatSyscall::Readlinkat => "readlinkat",
        }
    }

    /// The syscall of its number in the kernel record and the trace file.
    pub fn from_number(number: u64) -> Option<StatSyscall> {
        StatSyscall::ALL.into_iter().find(|s| *s as u64 == number)
    }
}

/// Points of the dynamic loader's startup that are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderPhase {
    /// ld.so's entry point: the loader starts.
    Start = 1,
    /// `_dl_start_user`: libraries mapped and relocated.
    Done = 2,
    /// The jump to the program's entry point, after the initialisers.
    Entry = 3,
}

impl LoaderPhase {
    pub fn name(self) -> &'static str {
        match self {
            LoaderPhase::Start => "start",
            LoaderPhase::Done => "done",
            LoaderPhase::Entry => "entry",
        }
    }
}

/// The environment variables glibc's dynamic loader reads (glibc 2.36,
/// `elf/rtld.c` and `elf/dl-support.c`): the only ones a trace records.
pub const LOADER_VARIABLES: &[&str] = &[
    "LD_AUDIT",
    "LD_BIND_NOT",
    "LD_BIND_NOW",
    "LD_DEBUG",
    "LD_DEBUG_OUTPUT",
    "LD_DYNAMIC_WEAK",
    "LD_HWCAP_MASK",
    "LD_LIBRARY_PATH",
    "LD_ORIGIN_PATH",
    "LD_PREFER_MAP_32BIT_EXEC",
    "LD_PRELOAD",
    "LD_PROFILE",
    "LD_PROFILE_OUTPUT",
    "LD_SHOW_AUXV",
    "LD_TRACE_LOADED_OBJECTS",
    "LD_USE_LOAD_BIAS",
    "LD_VERBOSE",
    "LD_WARN",
];

/// The loader's variables in a NUL-separated environment, as
/// (name, value): everything else is dropped here, before it can be
/// written anywhere.
pub fn loader_env(environment: &[u8]) -> Vec<(Bytes, Bytes)> {
    environment
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let at = entry.iter().position(|b| *b == b'=')?;
            let (name, value) = (&entry[..at], &entry[at + 1..]);
            LOADER_VARIABLES.iter().any(|v| v.as_bytes() == name).then(|| (name.to_vec(), value.to_vec()))
        })
        .collect()
}

/// A byte string from the traced system (paths, argv): not necessarily UTF-8.
pub type Bytes = Vec<u8>;

/// A byte string for display: invalid UTF-8 becomes U+FFFD.
/// A userspace `st_dev` as the kernel's `dev_t` (`MKDEV`), which is how
/// tracepoints and `super_block.s_dev` number devices, and so the trace.
pub fn kernel_dev(st_dev: u64) -> u32 {
    (libc::major(st_dev) << 20) | libc::minor(st_dev)
}

/// Is the file at `path` the one the trace named (device and inode)?
pub fn is_the_file(path: &std::path::Path, dev: u32, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.ino() == ino && kernel_dev(m.dev()) == dev)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Fork {
        common: Common,
        child_pid: u32,
        child_tid: u32,
        clone_flags: u64,
    },
    Exec {
        common: Common,
        old_tid: u32,
        filename: Bytes,
        argv: Vec<Bytes>,
        argv_truncated: bool,
        /// Device and inode of the executable (0 if unknown).
        dev: u32,
        ino: u64,
        /// The dynamic loader's own variables in its environment
        /// ([`LOADER_VARIABLES`]), name and value, in environment order.
        /// Nothing else of the environment is ever recorded.
        loader_env: Vec<(Bytes, Bytes)>,
        /// The environment was longer than the kernel side copies
        /// (`tracer_common::ENV_MAX`): a variable past that is missing.
        env_truncated: bool,
    },
    ExecFailed {
        common: Common,
        filename: Bytes,
        /// Negative errno.
        ret: i32,
    },
    Exit {
        common: Common,
        /// wait(2) status.
        status: i32,
        group_dead: bool,
    },
    Open {
        common: Common,
        syscall: OpenSyscall,
        dfd: i32,
        path: Bytes,
        /// For a relative path: the directory it was resolved against.
        dir: Option<Bytes>,
        /// The directory name was cut short (too deep or too long).
        dir_truncated: bool,
        flags: u64,
        mode: u32,
        /// fd, or negative errno.
        ret: i64,
        duration_ns: u64,
        /// Inode and device of the opened file (0 when the open failed).
        ino: u64,
        dev: u32,
    },
    /// A stat-family call looking a path up without opening it (recorded
    /// only with `record --probe stat`).
    Stat {
        common: Common,
        syscall: StatSyscall,
        dfd: i32,
        path: Bytes,
        /// For a relative path: the directory it was resolved against.
        dir: Option<Bytes>,
        dir_truncated: bool,
        /// `AT_*` flags, for the calls that take them.
        flags: u32,
        /// The access family's mode.
        mode: u32,
        /// 0 (readlink: the length read), or negative errno.
        ret: i64,
        duration_ns: u64,
    },
    Mmap {
        common: Common,
        /// None for anonymous (executable) maps.
        path: Option<Bytes>,
        path_truncated: bool,
        addr: u64,
        len: u64,
        offset: u64,
        prot: u32,
        flags: u32,
        fd: i32,
        dev: u32,
        ino: u64,
        duration_ns: u64,
    },
    /// Pages of a file entered the page cache: read from disk.
    PageCache {
        common: Common,
        dev: u32,
        ino: u64,
        index: u64,
        pages: u32,
    },
    /// A block request issued by this task completed.
    BlockIo {
        common: Common,
        dev: u32,
        sector: u64,
        bytes: u32,
        latency_ns: u64,
        write: bool,
        error: i32,
    },
    /// Where a thread's time went, sent when it exits (or when recording
    /// stops, for threads still running).
    Sched {
        common: Common,
        times: ThreadTimes,
    },
    /// Bytes a process read from a file with read/pread64 over the whole
    /// recording (written once, when recording stops).
    FileRead {
        common: Common,
        dev: u32,
        ino: u64,
        bytes: u64,
    },
    /// The dynamic loader of this process reached `phase`.
    Loader {
        common: Common,
        phase: LoaderPhase,
    },
    /// A cgroup v2 directory: created while tracing, or found at start.
    Cgroup {
        common: Common,
        id: u64,
        level: u32,
        path: Bytes,
        seeded: bool,
    },
    /// A process that existed when tracing started (from /proc).
    Process {
        ts_ns: u64,
        pid: u32,
        ppid: u32,
        /// Process start, CLOCK_BOOTTIME nanoseconds.
        start_ns: u64,
        cgroup_id: u64,
        exe: Option<Bytes>,
        argv: Vec<Bytes>,
    },
    /// Static ELF facts of a file the traced processes executed or mapped
    /// executable, read by the recorder while they ran, so that a report
    /// made later or elsewhere describes the file that ran.
    Binary {
        ts_ns: u64,
        /// Device (as the kernel numbers it) and inode of the file that ran.
        dev: u32,
        ino: u64,
        /// The path it was read at.
        path: Bytes,
        size_bytes: u64,
        /// Empty when `error` is set. Boxed: unboxed it made every event
        /// 256 bytes, not 120, and moving events through the reader was
        /// a tenth of an analysis's time.
        facts: Box<ElfFacts>,
        /// Why the facts could not be read (the file was gone, or was
        /// replaced by another before the recorder got to it).
        error: Option<Bytes>,
    },
    /// One store path the trace touched, or one in the closure of those,
    /// as the Nix store's database described it when recording stopped.
    StorePath {
        ts_ns: u64,
        /// `/nix/store/<hash>-<name>`.
        path: Bytes,
        /// The `.drv` that built it, when the store knows it.
        deriver: Option<Bytes>,
        /// The store paths it refers to (as Nix records them: the path
        /// itself included when it refers to itself).
        references: Vec<Bytes>,
    },
    /// Whether the `StorePath` records before it are the whole graph:
    /// written once, after them, when recording stops.
    StoreGraph {
        ts_ns: u64,
        /// The references and derivers of every store path the trace
        /// touched, and of their closure, were read.
        complete: bool,
        /// Why they were not (no Nix store, no `nix-store`, the query failed).
        error: Option<Bytes>,
    },
    /// What `systemd-analyze` said of the boot when `record --boot`
    /// stopped: written once, at the end, so that the boot's critical
    /// chain is part of the trace wherever it is read later.
    SystemdAnalyze {
        ts_ns: u64,
        /// `systemd-analyze critical-chain`'s output; None when it failed
        /// (no systemd-analyze, or the boot had not finished).
        critical_chain: Option<Bytes>,
        /// `systemd-analyze blame`'s output; None when it failed.
        blame: Option<Bytes>,
        /// `systemctl show` of the manager, then of every loaded unit
        /// (blocks of `Key=Value` lines, a blank line between): when
        /// userspace started and the boot finished, and when each unit
        /// started activating, became active and went inactive, in
        /// CLOCK_MONOTONIC µs.
        /// None when it failed, or in a version 4 trace.
        unit_times: Option<Bytes>,
    },
    /// Counters so far: written periodically and once at the end.
    Stats(Stats),
}

/// What an ELF file asks of the dynamic loader.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ElfFacts {
    /// Hex of the `NT_GNU_BUILD_ID` note: identifies the build across renames and copies.
    pub build_id: Option<String>,
    /// `PT_INTERP`: the loader the kernel starts for this executable.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in load order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` split on `:`, as written (`$ORIGIN` and empty entries included).
    pub runpath: Vec<String>,
    /// `DT_RPATH` split on `:`, as written. Ignored by the loader when `DT_RUNPATH` exists.
    pub rpath: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// Whether all symbols are bound at load time (`-z now`) rather than at first call.
    pub bind_now: bool,
    /// Relocations the loader applies: REL/RELA and PLT entries plus every address packed in RELR.
    pub relocations: u64,
    /// Entries in `.dynsym`, the null symbol included; 0 without section headers.
    pub dynamic_symbols: u64,
    /// `e_entry`, a virtual address.
    pub entry: u64,
    /// Whether the loader is involved at all: the file has `PT_INTERP` or `PT_DYNAMIC`.
    pub is_dynamic: bool,
}

/// A thread's (or a process's) time by scheduler state, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ThreadTimes {
    pub on_cpu_ns: u64,
    /// Runnable, waiting for a CPU.
    pub runnable_ns: u64,
    /// Uninterruptible sleep: mostly waiting for disk I/O.
    pub blocked_ns: u64,
    /// Interruptible sleep: waiting for events, timers, children.
    pub sleeping_ns: u64,
}

impl ThreadTimes {
    pub fn add(&mut self, other: &ThreadTimes) {
        self.on_cpu_ns = self.on_cpu_ns.saturating_add(other.on_cpu_ns);
        self.runnable_ns = self.runnable_ns.saturating_add(other.runnable_ns);
        self.blocked_ns = self.blocked_ns.saturating_add(other.blocked_ns);
        self.sleeping_ns = self.sleeping_ns.saturating_add(other.sleeping_ns);
    }
}

/// Event and loss counters, by probe name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    pub ts_ns: u64,
    /// Events written to the trace so far.
    pub events: u64,
    /// Events the kernel could not deliver, by probe (see `tracer_common::lost`).
    pub lost: BTreeMap<String, u64>,
}

impl Stats {
    pub fn lost_total(&self) -> u64 {
        self.lost.values().copied().saturating_sum()
    }
}

/// "N events lost (open: 3, mmap: 1)": how every output says a trace is
/// incomplete. None when nothing was lost.
pub fn describe_lost(lost: &BTreeMap<String, u64>) -> Option<String> {
    let total = lost.values().copied().saturating_sum();
    let by_probe: Vec<String> =
        lost.iter().filter(|(_, n)| **n > 0).map(|(p, n)| format!("{p}: {n}")).collect();
    (total > 0).then(|| format!("{total} events lost ({})", by_probe.join(", ")))
}

impl Event {
    /// The `type` of the event in `dump` output and the docs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::Fork { .. } => "fork",
            Event::Exec { .. } => "exec",
            Event::ExecFailed { .. } => "exec_failed",
            Event::Exit { .. } => "exit",
            Event::Open { .. } => "open",
            Event::Stat { .. } => "stat",
            Event::Mmap { .. } => "mmap",
            Event::Loader { .. } => "loader",
            Event::PageCache { .. } => "page_cache",
            Event::BlockIo { .. } => "block_io",
            Event::Sched { .. } => "sched",
            Event::FileRead { .. } => "read",
            Event::Cgroup { .. } => "cgroup",
            Event::Process { .. } => "process",
            Event::Binary { .. } => "binary",
            Event::StorePath { .. } => "store_path",
            Event::StoreGraph { .. } => "store_graph",
            Event::SystemdAnalyze { .. } => "systemd_analyze",
            Event::Stats(_) => "stats",
        }
    }

    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Fork { common, .. }
            | Event::Exec { common, .. }
            | Event::ExecFailed { common, .. }
            | Event::Exit { common, .. }
            | Event::Open { common, .. }
            | Event::Stat { common, .. }
            | Event::Mmap { common, .. }
            | Event::Loader { common, .. }
            | Event::PageCache { common, .. }
            | Event::BlockIo { common, .. }
            | Event::Sched { common, .. }
            | Event::FileRead { common, .. }
            | Event::Cgroup { common, .. } => common.ts_ns,
            Event::Process { ts_ns, .. }
            | Event::Binary { ts_ns, .. }
            | Event::StorePath { ts_ns, .. }
            | Event::StoreGraph { ts_ns, .. }
            | Event::SystemdAnalyze { ts_ns, .. } => *ts_ns,
            Event::Stats(stats) => stats.ts_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_loaders_variables_are_kept() {
        let env = b"HOME=/root\0LD_LIBRARY_PATH=/a:/b\0SECRET=x\0LD_PRELOAD=\0LD_LIBRARY_PATHX=no\0LD_AUDIT=/x.so=1\0";
        assert_eq!(
            loader_env(env),
            [
                (b"LD_LIBRARY_PATH".to_vec(), b"/a:/b".to_vec()),
                (b"LD_PRELOAD".to_vec(), Vec::new()),
                (b"LD_AUDIT".to_vec(), b"/x.so=1".to_vec()),
            ]
        );
        assert!(loader_env(b"").is_empty());
        assert!(loader_env(b"LD_LIBRARY_PATH").is_empty(), "no = sign: no variable");
    }
}
