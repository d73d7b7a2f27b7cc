//! Maps and the load-time configuration shared by all probes.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{Config, RING_BUFFER_BYTES, ReadKey, SCRATCH_SIZE, TaskTimes, lost};

use crate::pending::Slot;

#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(unsafe { core::mem::zeroed() });

#[inline(always)]
pub fn config() -> Config {
    CONFIG.load()
}

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BUFFER_BYTES, 0);

/// Events that could not be sent, per [`tracer_common::lost`] slot.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::SLOTS, 0);

#[repr(C)]
pub struct Scratch {
    pub buf: [u8; SCRATCH_SIZE],
}

/// Records are assembled here, then copied into `EVENTS` at their real size.
/// One slot per CPU is enough: tracepoint programs run with preemption off
/// and the kernel refuses to nest them on one CPU.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Processes (pids) being followed when `Config::follow_only` is set.
#[map]
pub static FOLLOWED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Syscall arguments saved at entry, keyed by thread id, until the exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingPathCall {
    pub ts_ns: u64,
    pub filename: u64,
    pub flags: u64,
    pub mode: u32,
    pub dfd: i32,
    pub syscall: u16,
    pub _pad: [u16; 3],
}

/// One slot per traced thread that has made such a call (`pending.rs`).
#[map]
pub static PENDING_OPEN: HashMap<u32, Slot<PendingPathCall>> = HashMap::with_max_entries(16384, 0);

#[map]
pub static PENDING_STAT: HashMap<u32, Slot<PendingPathCall>> = HashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingMmap {
    pub ts_ns: u64,
    pub len: u64,
    pub offset: u64,
    pub prot: u32,
    pub flags: u32,
    pub fd: i32,
    pub _pad: u32,
}

#[map]
pub static PENDING_MMAP: HashMap<u32, Slot<PendingMmap>> = HashMap::with_max_entries(16384, 0);

/// A file by device and inode.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// Files whose path an mmap record has carried, so that later mmaps of
/// them skip the dentry walk (a third of what an mmap cost to trace). A
/// file evicted is walked again.
#[map]
pub static WALKED: LruHashMap<FileKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// execve's filename pointer, to report failed execs at syscall exit.
#[map]
pub static PENDING_EXEC: HashMap<u32, Slot<u64>> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
pub fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

/// A block request being served, keyed by device and first sector.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockKey {
    pub sector: u64,
    pub dev: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingBlock {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub bytes: u32,
    pub flags: u32,
}

#[map]
pub static PENDING_BLOCK: HashMap<BlockKey, PendingBlock> = HashMap::with_max_entries(16384, 0);

/// Time by scheduler state, per traced thread (tid), until it exits.
#[map]
pub static TASK_TIMES: HashMap<u32, TaskTimes> = HashMap::with_max_entries(65536, 0);

/// Bytes read with read/pread64, per process and file, summed in the
/// kernel (reads are too frequent for one event each); userspace reads the
/// map when recording stops.
#[map]
pub static READ_BYTES: HashMap<ReadKey, u64> = HashMap::with_max_entries(65536, 0);

/// The fd of a read in progress, by thread.
#[map]
pub static PENDING_READ: HashMap<u32, Slot<i64>> = HashMap::with_max_entries(16384, 0);
