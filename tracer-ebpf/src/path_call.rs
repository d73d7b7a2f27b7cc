//! What the probes on path syscalls (open, stat) share: the call's
//! arguments saved at entry, keyed by thread, and at exit the saved call
//! with its result, its path copied into the scratch buffer after the
//! record's fixed part, and the directory a relative path is relative to.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, maps::HashMap, programs::TracePointContext};

use crate::{
    emit::{scratch, user_str},
    kernel::relative_dir,
    maps::{PendingPathCall, config},
    pending::{self, Slot},
    syscall::{RET, field},
};

/// A path call at its exit, its strings in the scratch buffer.
pub struct Exit {
    pub call: PendingPathCall,
    pub ret: i64,
    /// The time of the exit, the record's time.
    pub ts_ns: u64,
    pub duration_ns: u64,
    pub buf: *mut u8,
    pub path_len: usize,
    pub dir_len: usize,
    pub dir_flags: u16,
}

/// The call `tid` saved in `map`, taken out, with its result and strings
/// written after `fixed` bytes of the scratch buffer; None when nothing
/// was saved (the entry was not traced, or was skipped).
#[inline(always)]
pub fn exit(
    ctx: &TracePointContext,
    map: &HashMap<u32, Slot<PendingPathCall>>,
    tid: u32,
    fixed: usize,
) -> Option<Exit> {
    let call = pending::take(map, tid)?;
    // SAFETY: helper without arguments.
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    let ret = field(ctx, RET) as i64;
    let buf = scratch()?;
    let path_len = user_str(buf, fixed, call.filename);
    let (dir_len, dir_flags) = relative_dir(&config().kernel, buf, fixed, path_len, call.dfd);
    Some(Exit { call, ret, ts_ns, duration_ns: ts_ns - call.ts_ns, buf, path_len, dir_len, dir_flags })
}
