//! mmap of files (and executable anonymous maps, JIT code): which file,
//! named by walking the mapped `struct file`'s dentries, so the name is right
//! whatever happened to the fd before or after; prot, length, offset, and
//! the file's device and inode.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{EventKind, MmapEvent, lost};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    kernel::{file_id, file_of_fd, path_parts, walk_path},
    maps::{PENDING_MMAP, PendingMmap, config, count_lost},
    syscall::{RET, arg},
};

const PROT_EXEC: u32 = 4;
const MAP_ANONYMOUS: u32 = 0x20;

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    // SAFETY (all ctx reads): fixed syscall-tracepoint layout.
    let flags = unsafe { ctx.read_at::<u64>(arg(3)) }.unwrap_or(0) as u32;
    let prot = unsafe { ctx.read_at::<u64>(arg(2)) }.unwrap_or(0) as u32;
    let fd = unsafe { ctx.read_at::<u64>(arg(4)) }.unwrap_or(0) as i32;
    let anonymous = flags & MAP_ANONYMOUS != 0 || fd < 0;
    if anonymous && prot & PROT_EXEC == 0 {
        return 0;
    }
    if !is_traced(pid) {
        return 0;
    }
    let pending = PendingMmap {
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        len: unsafe { ctx.read_at::<u64>(arg(1)) }.unwrap_or(0),
        offset: unsafe { ctx.read_at::<u64>(arg(5)) }.unwrap_or(0),
        prot,
        flags,
        fd: if anonymous { -1 } else { fd },
        _pad: 0,
    };
    if PENDING_MMAP.insert(&tid, &pending, 0).is_err() {
        count_lost(lost::PENDING_FULL);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_MMAP.get(&tid) }).copied() else { return 0 };
    let _ = PENDING_MMAP.remove(&tid);
    // SAFETY: fixed syscall-tracepoint layout.
    let addr = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1);
    if addr < 0 && addr > -4096 {
        return 0; // failed mmaps are not reported
    }
    let Some(buf) = scratch() else { return 0 };
    let fixed = core::mem::size_of::<MmapEvent>();
    let (mut path_len, mut path_flags) = (0, 0);
    let k = config().kernel;
    if let Some(file) = file_of_fd(&k, pending.fd)
        && let Some((mnt, dentry)) = path_parts(&k, file + k.file_path as u64)
    {
        (path_len, path_flags) = walk_path(fixed, mnt, dentry);
    }
    let (ino, dev) = file_id(&k, i64::from(pending.fd));
    put_fixed(
        buf,
        MmapEvent {
            header: header(EventKind::Mmap, pid, tid),
            addr: addr as u64,
            len: pending.len,
            offset: pending.offset,
            prot: pending.prot,
            flags: pending.flags,
            fd: pending.fd,
            path_len: path_len as u16,
            path_flags,
            ino,
            dev,
            _pad: 0,
            // SAFETY: helper without arguments.
            duration_ns: unsafe { bpf_ktime_get_boot_ns() } - pending.ts_ns,
        },
    );
    send(buf, fixed + path_len, EventKind::Mmap);
    0
}
