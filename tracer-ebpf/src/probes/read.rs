//! Bytes read with read(2) and pread64(2), per process and file: whether
//! they came from the page cache or the disk (`page_cache.rs` tells which
//! did). Summed in `READ_BYTES` rather than sent per call.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{ReadKey, lost};

use crate::{
    filter::{current_ids, is_traced},
    kernel::file_id,
    maps::{PENDING_READ, READ_BYTES, config, count_lost},
    pending,
    syscall::{RET, arg, field},
};

/// Syscall tracepoint records: `args[0]` (the fd) and the return value.

#[inline(always)]
fn remember_fd(ctx: &TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    pending::save(&PENDING_READ, tid, field(ctx, arg(0)) as i64);
    0
}

fn count_bytes(ctx: &TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    let Some(fd) = pending::take(&PENDING_READ, tid) else { return 0 };
    let bytes = field(ctx, RET) as i64;
    if bytes <= 0 {
        return 0;
    }
    let (ino, dev) = file_id(&config().kernel, fd);
    if ino == 0 {
        return 0;
    }
    let key = ReadKey { ino, dev, pid };
    match READ_BYTES.get_ptr_mut(&key) {
        // SAFETY: a map value; a lost race between CPUs only undercounts.
        Some(total) => unsafe { *total += bytes as u64 },
        None => {
            if READ_BYTES.insert(&key, &(bytes as u64), 0).is_err() {
                count_lost(lost::READ_FULL);
            }
        }
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_read")]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    remember_fd(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn sys_exit_read(ctx: TracePointContext) -> u32 {
    count_bytes(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_pread64")]
pub fn sys_enter_pread64(ctx: TracePointContext) -> u32 {
    remember_fd(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_pread64")]
pub fn sys_exit_pread64(ctx: TracePointContext) -> u32 {
    count_bytes(&ctx)
}
