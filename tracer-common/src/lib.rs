//! The event ABI shared by nixtrace's eBPF programs (`tracer-ebpf`) and its
//! userspace collector (`nixtrace`).
//!
//! Every record the kernel sends through the `EVENTS` ring buffer starts with
//! an [`EventHeader`]; its `kind` says which fixed-size struct follows, and
//! that struct's `*_len` fields say how many string bytes trail it, in the
//! order the fields are declared. Strings carry no NUL terminator.
//!
//! Paths the kernel reconstructs itself by walking dentries (mmap'd files,
//! the directory of a relative open) are sent as *reversed components*: the
//! leaf name first, each component followed by one NUL byte, up to the root.
//! Userspace reverses and joins them ([`join_reversed_components`]). This keeps
//! the kernel-side walk a simple forward append, which the verifier accepts.
//!
//! The layout is `#[repr(C)]` with explicit padding. The `layout!` table at
//! the end pins every size and offset at compile time, and is checked by
//! both compilers, the BPF one and the host one: if either lays a record out
//! differently, that side does not build. (`Config`, which the object's BTF
//! describes, is also compared against the built object by a test in
//! `tracer`.)
#![no_std]

/// Bytes of NUL-separated argv captured per exec (from the new image's
/// `mm->arg_start`); longer command lines are cut and flagged.
pub const ARGV_MAX: usize = 1024;
/// Bytes of the environment (`mm->env_start`) copied per exec, for the
/// recorder to keep the dynamic loader's own variables from and drop the
/// rest; an environment cut there is flagged.
pub const ENV_MAX: usize = 4096;
/// Bytes of a path as the program passed it (open, exec).
pub const PATH_MAX: usize = 4096;
/// Bytes of a path the kernel reconstructs from dentries.
pub const WALK_PATH_MAX: usize = 4096;
/// Most path components a dentry walk follows before it gives up and marks
/// the path truncated.
pub const WALK_DEPTH_MAX: u32 = 48;
/// Size of the per-CPU scratch buffer that records are assembled in.
pub const SCRATCH_SIZE: usize = 16384;

/// Ring buffer size in bytes (a power of two multiple of the page size).
pub const RING_BUFFER_BYTES: u32 = 64 << 20;

/// The programs wake the recorder once this fraction of the ring buffer
/// is pending (`Config::wake_at_bytes`).
pub const WAKE_AT_ONE_IN: u32 = 8;

/// Which fixed part follows the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Fork = 1,
    Exec = 2,
    ExecFailed = 3,
    Exit = 4,
    Open = 5,
    Mmap = 6,
    CgroupMkdir = 7,
    Loader = 8,
    PageCache = 9,
    BlockIo = 10,
    Sched = 11,
    Stat = 12,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Fork,
        EventKind::Exec,
        EventKind::ExecFailed,
        EventKind::Exit,
        EventKind::Open,
        EventKind::Mmap,
        EventKind::CgroupMkdir,
        EventKind::Loader,
        EventKind::PageCache,
        EventKind::BlockIo,
        EventKind::Sched,
        EventKind::Stat,
    ];

    pub fn from_u32(kind: u32) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| *k as u32 == kind)
    }

    /// The name used for this probe in the trace header and loss counts.
    pub fn probe_name(self) -> &'static str {
        match self {
            EventKind::Fork => "fork",
            EventKind::Exec => "exec",
            EventKind::ExecFailed => "exec_failed",
            EventKind::Exit => "exit",
            EventKind::Open => "open",
            EventKind::Mmap => "mmap",
            EventKind::CgroupMkdir => "cgroup_mkdir",
            EventKind::Loader => "loader",
            EventKind::PageCache => "page_cache",
            EventKind::BlockIo => "block_io",
            EventKind::Sched => "sched",
            EventKind::Stat => "stat",
        }
    }
}

/// Slots of the per-CPU `LOST` counter array: one per event kind (index =
/// kind), plus the places that can lose an event before it has a kind.
pub mod lost {
    /// A syscall-entry record could not be stored (the pending map was full),
    /// so the matching exit could not be reported.
    pub const PENDING_FULL: u32 = 0;
    /// A newly forked process could not be added to the followed set (the
    /// map was full): its events are missing from a filtered trace.
    pub const FOLLOW_FULL: u32 = 15;
    /// A process's reads of a file could not be counted (the `READ_BYTES`
    /// map was full).
    pub const READ_FULL: u32 = 14;
    /// Number of slots.
    pub const SLOTS: u32 = 16;
}

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// CLOCK_BOOTTIME in nanoseconds (`bpf_ktime_get_boot_ns`).
    pub ts_ns: u64,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Process id (thread group id) in the initial PID namespace.
    pub pid: u32,
    /// Thread id in the initial PID namespace.
    pub tid: u32,
    /// An [`EventKind`].
    pub kind: u32,
    pub _pad: u32,
}

/// fork/clone: the header is the parent, this is the child.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub child_tid: u32,
    pub clone_flags: u64,
}

/// A successful exec (`sched_process_exec`), from inside the new image.
/// Trailing: `filename_len` bytes of filename, `argv_len` bytes of
/// NUL-separated argv, then `env_len` bytes of the NUL-separated
/// environment (which the recorder filters before anything is written).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread id that called exec (differs from `header.tid` when a
    /// non-leader thread execs and takes over the thread group).
    pub old_tid: u32,
    pub filename_len: u16,
    pub argv_len: u16,
    /// Bit 0: argv was longer than [`ARGV_MAX`] and is cut.
    pub flags: u32,
    /// Device and inode of the new executable (`mm->exe_file`), so its
    /// page-cache reads can be named.
    pub dev: u32,
    pub ino: u64,
    pub env_len: u16,
    pub _pad: [u16; 3],
}

pub const EXEC_ARGV_TRUNCATED: u32 = 1;
/// The environment was longer than [`ENV_MAX`] and is cut.
pub const EXEC_ENV_TRUNCATED: u32 = 2;

/// An exec that returned an error. Trailing: `filename_len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecFailedEvent {
    pub header: EventHeader,
    /// Negative errno.
    pub ret: i32,
    pub filename_len: u16,
    pub _pad: u16,
}

/// A task ended (`sched_process_exit`); sent for every thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task->exit_code`: a wait(2) status (exit code << 8, or signal).
    pub exit_status: i32,
    /// [`EXIT_GROUP_DEAD`] when this was the last thread of its process.
    pub flags: u32,
}

pub const EXIT_GROUP_DEAD: u32 = 1;

/// Which open-family syscall an [`OpenEvent`] came from.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenSyscall {
    Open = 1,
    Openat = 2,
    Openat2 = 3,
}

/// One open/openat/openat2 call, reported at syscall exit.
/// Trailing: `path_len` bytes of the path as requested, then `dir_len` bytes
/// of the directory it is relative to (reversed components; only when the
/// path is relative).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// The new fd, or a negative errno.
    pub ret: i64,
    /// Time from syscall entry to exit.
    pub duration_ns: u64,
    /// openat2's `how.flags` is 64-bit; the others fit in the low half.
    pub flags: u64,
    pub mode: u32,
    /// The dirfd argument (`AT_FDCWD` = -100), or -100 for `open`.
    pub dfd: i32,
    /// An [`OpenSyscall`].
    pub syscall: u16,
    pub path_len: u16,
    pub dir_len: u16,
    /// Bit 0: the directory walk hit [`WALK_DEPTH_MAX`] or the buffer end.
    pub dir_flags: u16,
    /// Inode and device of the opened file (0 when the open failed), so
    /// page-cache and mmap events can be tied to this path.
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// Which stat-family syscall a [`StatEvent`] came from: the calls that look
/// a path up without opening it.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatSyscall {
    Newstat = 1,
    Newlstat = 2,
    Newfstatat = 3,
    Statx = 4,
    Access = 5,
    Faccessat = 6,
    Faccessat2 = 7,
    Readlink = 8,
    Readlinkat = 9,
}

/// One stat-family call on a path (an empty path, `fstat` through
/// `AT_EMPTY_PATH`, is not sent), reported at syscall exit. Trailing, as for
/// [`OpenEvent`]: the path as requested, then for a relative path the
/// directory it is relative to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StatEvent {
    pub header: EventHeader,
    /// The syscall's result: 0 (readlink: the bytes it read), or a negative
    /// errno.
    pub ret: i64,
    pub duration_ns: u64,
    /// The `AT_*` flags (0 for the calls without them; `newlstat` and
    /// `readlink` do not follow the last symlink whatever these say).
    pub flags: u32,
    /// The access mode of the access family; 0 for the others.
    pub mode: u32,
    /// The dirfd argument, or `AT_FDCWD` (-100) for the calls without one.
    pub dfd: i32,
    /// A [`StatSyscall`].
    pub syscall: u16,
    pub path_len: u16,
    pub dir_len: u16,
    /// As [`OpenEvent::dir_flags`].
    pub dir_flags: u16,
    pub _pad: u32,
}

/// A path produced by a dentry walk was cut short.
pub const WALK_TRUNCATED: u16 = 1;
/// An mmap's file was named by an earlier record of the recording (same
/// device and inode), so it was not walked again: the recorder names it.
pub const WALK_SKIPPED: u16 = 2;

/// A file-backed (or executable anonymous) mmap, reported at syscall exit.
/// Trailing: `path_len` bytes of the mapped file's path (reversed
/// components); zero for anonymous maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmapEvent {
    pub header: EventHeader,
    /// Mapped address.
    pub addr: u64,
    pub len: u64,
    pub offset: u64,
    pub prot: u32,
    pub flags: u32,
    pub fd: i32,
    pub path_len: u16,
    /// [`WALK_TRUNCATED`] when the path walk was cut short,
    /// [`WALK_SKIPPED`] when there was none.
    pub path_flags: u16,
    /// Device and inode of the mapped file, so a path can be checked against
    /// the file system later (0 when anonymous).
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
    /// Time from syscall entry to exit.
    pub duration_ns: u64,
}

/// Pages of a file were added to the page cache (read from disk, or
/// read ahead), in the context of the current task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PageCacheEvent {
    pub header: EventHeader,
    pub ino: u64,
    /// Index of the first page in the file.
    pub index: u64,
    pub dev: u32,
    /// Number of pages (a folio may hold several).
    pub pages: u32,
}

/// A block I/O request completed. The header is the task that issued it
/// (its time is the completion); `latency_ns` is issue to completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockIoEvent {
    pub header: EventHeader,
    pub latency_ns: u64,
    pub sector: u64,
    pub bytes: u32,
    pub dev: u32,
    /// [`BLOCK_WRITE`] and friends.
    pub flags: u32,
    pub error: i32,
}

pub const BLOCK_WRITE: u32 = 1;

/// Where a thread's time went, from the scheduler's tracepoints; sent when
/// the thread exits (and read from the `TASK_TIMES` map for threads still
/// running when recording stops).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedEvent {
    pub header: EventHeader,
    pub times: TaskTimes,
}

/// A thread's time by state. Kept per thread in the `TASK_TIMES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskTimes {
    /// Running on a CPU.
    pub on_cpu_ns: u64,
    /// Runnable, waiting for a CPU (preempted, or woken and not yet run).
    pub runnable_ns: u64,
    /// In uninterruptible sleep (D): mostly waiting for disk I/O.
    pub blocked_ns: u64,
    /// In interruptible sleep (S) or stopped: waiting for events or timers.
    pub sleeping_ns: u64,
    /// When the current state began.
    pub since_ns: u64,
    /// The thread's process.
    pub pid: u32,
    /// One of the `TASK_*` states below.
    pub state: u32,
}

impl TaskTimes {
    /// Charges the time since the last change of state to that state.
    #[inline(always)]
    pub fn close_interval(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.since_ns);
        match self.state {
            TASK_ON_CPU => self.on_cpu_ns += elapsed,
            TASK_RUNNABLE => self.runnable_ns += elapsed,
            TASK_BLOCKED => self.blocked_ns += elapsed,
            _ => self.sleeping_ns += elapsed,
        }
        self.since_ns = now;
    }
}

/// Key of the `READ_BYTES` map: bytes read by a process from one file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReadKey {
    pub ino: u64,
    pub dev: u32,
    pub pid: u32,
}

pub const TASK_ON_CPU: u32 = 0;
pub const TASK_RUNNABLE: u32 = 1;
pub const TASK_BLOCKED: u32 = 2;
pub const TASK_SLEEPING: u32 = 3;

/// The glibc dynamic loader of the current process reached a point of its
/// startup (uprobes on `ld.so`; see `record/loader_probes.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LoaderEvent {
    pub header: EventHeader,
    /// [`LOADER_START`], [`LOADER_DONE`] or [`LOADER_ENTRY`].
    pub phase: u32,
    pub _pad: u32,
}

/// The loader's entry point (`_start`): it begins.
pub const LOADER_START: u32 = 1;
/// `_dl_start_user`: libraries are mapped and relocated; initialisers and
/// the program's entry point come next.
pub const LOADER_DONE: u32 = 2;
/// The jump to the program's entry point: initialisers have run.
pub const LOADER_ENTRY: u32 = 3;

/// A cgroup directory was created. Trailing: `path_len` bytes of its path
/// relative to the cgroup v2 root (starting with `/`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupEvent {
    pub header: EventHeader,
    pub id: u64,
    pub level: u32,
    pub path_len: u16,
    pub _pad: u16,
}

/// Byte offset of a field inside a tracepoint record, as read from tracefs
/// `format` files at load time; [`FIELD_ABSENT`] when the running kernel's
/// tracepoint lacks the field.
pub const FIELD_ABSENT: u32 = u32::MAX;

/// Offsets of the classic tracepoint fields the programs read. Syscall
/// tracepoints are not here: their layout (`args[i]` at `16 + 8*i`) is part
/// of the syscall ABI and checked by userspace at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracepointFields {
    pub exec_filename: u32,
    pub exec_old_pid: u32,
    pub newtask_pid: u32,
    pub newtask_clone_flags: u32,
    /// Size of `clone_flags` (4 or 8) on this kernel.
    pub newtask_clone_flags_size: u32,
    pub exit_group_dead: u32,
    pub cgroup_root: u32,
    pub cgroup_id: u32,
    pub cgroup_level: u32,
    pub cgroup_path: u32,
    pub page_cache_ino: u32,
    pub page_cache_index: u32,
    pub page_cache_dev: u32,
    /// [`FIELD_ABSENT`] on kernels without large folios (one page each).
    pub page_cache_order: u32,
    pub block_issue_dev: u32,
    pub block_issue_sector: u32,
    pub block_issue_bytes: u32,
    pub block_issue_rwbs: u32,
    pub block_complete_dev: u32,
    pub block_complete_sector: u32,
    pub block_complete_error: u32,
    pub switch_prev_state: u32,
    pub switch_next_pid: u32,
    pub wakeup_pid: u32,
}

/// Offsets into kernel structs, resolved from the running kernel's BTF at
/// load time (Rust eBPF has no CO-RE relocations yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub task_exit_code: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub mm_exe_file: u32,
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_path: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub dentry_parent: u32,
    pub dentry_name_ptr: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
}

/// Everything userspace tells the programs at load time (one global,
/// `CONFIG`, written with `EbpfLoader::override_global`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// The recorder's own pid: its events are never traced.
    pub self_pid: u32,
    /// Non-zero: only processes in the `FOLLOWED` map are traced; children
    /// they fork join it.
    pub follow_only: u32,
    /// Non-zero: children the recorder itself forks join `FOLLOWED` (that
    /// is how `record -- CMD` follows CMD from its first instruction).
    pub follow_own_children: u32,
    /// Level of `cgroup_filter_id` in the cgroup v2 tree, when filtering.
    pub cgroup_filter_level: u32,
    /// Non-zero: the sched probe is attached, so fork starts each new
    /// thread's time accounting (without it the totals would be partial).
    pub sched_times: u32,
    /// The ring buffer's pending bytes at which a program wakes the
    /// recorder (an eighth of its size): known at load time, so the
    /// programs need not ask the ring for its size at every record.
    pub wake_at_bytes: u32,
    /// The calibration helper (`record/calibrate.rs`), traced like any
    /// process, whose records the recorder drops: the ring having no room
    /// for one is not a loss. 0 when there is none.
    pub calibrator_pid: u32,
    pub _pad: u32,
    /// Non-zero: only tasks inside this cgroup (or below it) are traced.
    pub cgroup_filter_id: u64,
    pub tracepoints: TracepointFields,
    pub kernel: KernelOffsets,
}

/// Joins a reversed-components path (see the crate docs) into `out`.
/// An empty input yields `/`.
#[cfg(feature = "user")]
pub fn join_reversed_components(bytes: &[u8], out: &mut alloc::vec::Vec<u8>) {
    let mut parts = bytes.split(|b| *b == 0).filter(|p| !p.is_empty()).collect::<alloc::vec::Vec<_>>();
    parts.reverse();
    if parts.is_empty() {
        out.push(b'/');
    }
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
}

#[cfg(feature = "user")]
extern crate alloc;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain #[repr(C)] integers with explicit padding fields.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above; userspace reads the maps of these at the end.
    unsafe impl aya::Pod for TaskTimes {}
    unsafe impl aya::Pod for ReadKey {}
}

/// Fails the build, on whichever target disagrees, if a record's size or
/// a member's offset is not the one in the table.
macro_rules! layout {
    ($ty:ty, $size:expr, { $($field:ident: $offset:expr),* $(,)? }) => {
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size);
            $(assert!(core::mem::offset_of!($ty, $field) == $offset);)*
        };
    };
}

layout!(EventHeader, 32, { ts_ns: 0, cgroup_id: 8, pid: 16, tid: 20, kind: 24, _pad: 28 });
layout!(ForkEvent, 48, { header: 0, child_pid: 32, child_tid: 36, clone_flags: 40 });
layout!(ExecEvent, 64, { header: 0, old_tid: 32, filename_len: 36, argv_len: 38, flags: 40, dev: 44, ino: 48, env_len: 56, _pad: 58 });
layout!(ExecFailedEvent, 40, { header: 0, ret: 32, filename_len: 36, _pad: 38 });
layout!(ExitEvent, 40, { header: 0, exit_status: 32, flags: 36 });
layout!(OpenEvent, 88, {
    header: 0, ret: 32, duration_ns: 40, flags: 48, mode: 56, dfd: 60, syscall: 64, path_len: 66,
    dir_len: 68, dir_flags: 70, ino: 72, dev: 80, _pad: 84,
});
layout!(StatEvent, 72, {
    header: 0, ret: 32, duration_ns: 40, flags: 48, mode: 52, dfd: 56, syscall: 60, path_len: 62,
    dir_len: 64, dir_flags: 66, _pad: 68,
});
layout!(PageCacheEvent, 56, { header: 0, ino: 32, index: 40, dev: 48, pages: 52 });
layout!(BlockIoEvent, 64, {
    header: 0, latency_ns: 32, sector: 40, bytes: 48, dev: 52, flags: 56, error: 60,
});
layout!(MmapEvent, 96, {
    header: 0, addr: 32, len: 40, offset: 48, prot: 56, flags: 60, fd: 64, path_len: 68, path_flags: 70,
    ino: 72, dev: 80, _pad: 84, duration_ns: 88,
});
layout!(LoaderEvent, 40, { header: 0, phase: 32, _pad: 36 });
layout!(TaskTimes, 48, {
    on_cpu_ns: 0, runnable_ns: 8, blocked_ns: 16, sleeping_ns: 24, since_ns: 32, pid: 40, state: 44,
});
layout!(SchedEvent, 80, { header: 0, times: 32 });
layout!(ReadKey, 16, { ino: 0, dev: 8, pid: 12 });
layout!(CgroupEvent, 48, { header: 0, id: 32, level: 40, path_len: 44, _pad: 46 });

#[cfg(all(test, feature = "user"))]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn reversed_components_join() {
        let mut out = std::vec::Vec::new();
        join_reversed_components(b"libc.so.6\0lib\0usr\0", &mut out);
        assert_eq!(out, b"/usr/lib/libc.so.6");
        out.clear();
        join_reversed_components(b"", &mut out);
        assert_eq!(out, b"/");
    }
}
