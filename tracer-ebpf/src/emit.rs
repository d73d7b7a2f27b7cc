//! Assembling a record in the per-CPU scratch buffer and sending it.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
    generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str},
};
use core::ffi::c_void;
use tracer_common::{EventHeader, EventKind, PATH_MAX, SCRATCH_SIZE};

use crate::maps::{EVENTS, SCRATCH, config, count_lost};

/// The scratch buffer of this CPU.
#[inline(always)]
pub fn scratch() -> Option<*mut u8> {
    SCRATCH.get_ptr_mut(0).map(|s| s.cast::<u8>())
}

#[inline(always)]
pub fn header(kind: EventKind, pid: u32, tid: u32) -> EventHeader {
    // SAFETY: helper without arguments.
    header_at(kind, pid, tid, unsafe { bpf_ktime_get_boot_ns() })
}

/// A header with a time the program already read: reading the clock is
/// not cheap on a VM.
#[inline(always)]
pub fn header_at(kind: EventKind, pid: u32, tid: u32, ts_ns: u64) -> EventHeader {
    EventHeader {
        ts_ns,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid,
        tid,
        kind: kind as u32,
        _pad: 0,
    }
}

/// Writes the fixed part of a record at the start of the scratch buffer.
#[inline(always)]
pub fn put_fixed<T>(buf: *mut u8, fixed: T) {
    // SAFETY: the scratch buffer is 8-aligned and larger than any record.
    unsafe { buf.cast::<T>().write(fixed) };
}

/// Masks an offset so the verifier can bound every access that uses it.
#[inline(always)]
pub fn bounded(offset: usize) -> usize {
    offset & (SCRATCH_SIZE / 2 - 1)
}

/// Copies a NUL-terminated user string to `buf + offset`; returns its length
/// without the NUL (0 if unreadable).
#[inline(always)]
pub fn user_str(buf: *mut u8, offset: usize, src: u64) -> usize {
    // SAFETY: offset < SCRATCH_SIZE / 2 and PATH_MAX <= SCRATCH_SIZE / 2.
    let n = unsafe {
        bpf_probe_read_user_str(
            buf.add(bounded(offset)).cast::<c_void>(),
            PATH_MAX as u32,
            src as *const c_void,
        )
    };
    if n > 0 { (n - 1) as usize & (PATH_MAX - 1) } else { 0 }
}

/// Like [`user_str`] for a kernel string of at most `PATH_MAX` bytes.
#[inline(always)]
pub fn kernel_str(buf: *mut u8, offset: usize, src: *const u8) -> usize {
    // SAFETY: as in `user_str`.
    let n = unsafe {
        bpf_probe_read_kernel_str(
            buf.add(bounded(offset)).cast::<c_void>(),
            PATH_MAX as u32,
            src.cast::<c_void>(),
        )
    };
    if n > 0 { (n - 1) as usize & (PATH_MAX - 1) } else { 0 }
}

/// Copies `len` bytes of user memory (at most `max`, a power of two) to
/// `buf + offset`; returns the number copied.
#[inline(always)]
pub fn user_bytes(buf: *mut u8, offset: usize, src: u64, len: usize, max: usize) -> usize {
    let len = if len > max { max } else { len };
    let len = len & (2 * max - 1);
    if len == 0 {
        return 0;
    }
    // SAFETY: offset and len are both bounded well inside the buffer.
    let ret = unsafe {
        bpf_probe_read_user(buf.add(bounded(offset)).cast::<c_void>(), len as u32, src as *const c_void)
    };
    if ret == 0 { len } else { 0 }
}

/// Whether the current task is the calibration helper, whose records the
/// recorder drops anyway.
#[inline(always)]
fn from_calibrator() -> bool {
    let calibrator = config().calibrator_pid;
    calibrator != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == calibrator
}

/// Sends `len` bytes of the scratch buffer; counts the record as lost for
/// its probe when the ring buffer is full, and then returns false.
///
/// Records go without waking the recorder until an eighth of the ring is
/// pending (`Config::wake_at_bytes`). By default the kernel wakes the reader whenever it has caught
/// up, which one record at a time it always has: an irq_work interrupt and
/// a context switch per record, most of what tracing an open storm cost.
/// The recorder also drains the ring on a timer, so a trickle of records
/// waits at most that long.
#[inline(always)]
pub fn send(buf: *mut u8, len: usize, kind: EventKind) -> bool {
    if len > SCRATCH_SIZE {
        count_lost(kind as u32);
        return false;
    }
    // SAFETY: `len` is bounded by the scratch buffer's size just above.
    let record = unsafe { core::slice::from_raw_parts(buf.cast_const(), len) };
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA.into());
    let wake = pending >= u64::from(config().wake_at_bytes);
    // Branch-free, so the verifier does not walk the rest of each program twice.
    let flags =
        u64::from(BPF_RB_NO_WAKEUP) + u64::from(wake) * u64::from(BPF_RB_FORCE_WAKEUP - BPF_RB_NO_WAKEUP);
    let sent = EVENTS.output::<[u8]>(record, flags).is_ok();
    if !sent && !from_calibrator() {
        count_lost(kind as u32);
    }
    sent
}
