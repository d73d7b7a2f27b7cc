//! mmap of files (and executable anonymous maps, JIT code): which file,
//! named by walking the mapped `struct file`'s dentries, so the name is right
//! whatever happened to the fd before or after; prot, length, offset, and
//! the file's device and inode. A file an earlier record named (`WALKED`)
//! is not walked again: the recorder names it from that record.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{EventKind, MmapEvent, WALK_SKIPPED};

use crate::{
    emit::{header_at, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    kernel::{file_id_of, file_of_fd, path_parts, walk_path},
    maps::{FileKey, PENDING_MMAP, PendingMmap, WALKED, config},
    pending,
    syscall::{RET, arg, field},
};

const PROT_EXEC: u32 = 4;
const MAP_ANONYMOUS: u32 = 0x20;

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    let flags = field(&ctx, arg(3)) as u32;
    let prot = field(&ctx, arg(2)) as u32;
    let fd = field(&ctx, arg(4)) as i32;
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
        len: field(&ctx, arg(1)),
        offset: field(&ctx, arg(5)),
        prot,
        flags,
        fd: if anonymous { -1 } else { fd },
        _pad: 0,
    };
    pending::save(&PENDING_MMAP, tid, pending);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_mmap")]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    let Some(pending) = pending::take(&PENDING_MMAP, tid) else { return 0 };
    // SAFETY: helper without arguments.
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    let addr = field(&ctx, RET) as i64;
    if addr < 0 && addr > -4096 {
        return 0; // failed mmaps are not reported
    }
    let Some(buf) = scratch() else { return 0 };
    let fixed = core::mem::size_of::<MmapEvent>();
    let (mut path_len, mut path_flags) = (0, 0);
    let k = config().kernel;
    let file = file_of_fd(&k, pending.fd);
    let (ino, dev) = file_id_of(&k, file.unwrap_or(0));
    let key = FileKey { ino, dev, _pad: 0 };
    // SAFETY: the value is only tested for presence.
    let named_before = ino != 0 && unsafe { WALKED.get(&key) }.is_some();
    if named_before {
        path_flags = WALK_SKIPPED;
    } else if let Some(file) = file
        && let Some((mnt, dentry)) = path_parts(&k, file + k.file_path as u64)
    {
        (path_len, path_flags) = walk_path(fixed, mnt, dentry);
    }
    put_fixed(
        buf,
        MmapEvent {
            header: header_at(EventKind::Mmap, pid, tid, ts_ns),
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
            duration_ns: ts_ns - pending.ts_ns,
        },
    );
    // Only once the record is in the ring: a later record that skips the
    // walk must come after the one that names the file.
    if send(buf, fixed + path_len, EventKind::Mmap) && !named_before && path_len > 0 && path_flags == 0 {
        let _ = WALKED.insert(&key, &1, 0);
    }
    0
}
