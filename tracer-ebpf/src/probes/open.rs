//! open, openat and openat2, every call including failures: the path as
//! requested, and for a relative path the directory it is relative to
//! (the cwd or the dirfd's file, walked from its dentry), flags, the result
//! and the time the call took.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{EventKind, OpenEvent, OpenSyscall};

use crate::{
    emit::{header_at, put_fixed, send},
    filter::{current_ids, is_traced},
    kernel::file_id,
    maps::{PENDING_OPEN, PendingPathCall, config},
    path_call, pending,
    syscall::{AT_FDCWD, arg, field},
};
use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_user};

#[inline(always)]
fn remember(ctx: &TracePointContext, syscall: OpenSyscall, dfd: Option<usize>, path: usize) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    let dfd = match dfd {
        Some(at) => field(ctx, at) as i32,
        None => AT_FDCWD,
    };
    let filename = field(ctx, path);
    let (flags, mode) = match syscall {
        OpenSyscall::Openat2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = field(ctx, arg(2));
            // SAFETY: a bad user pointer is an error, not a fault.
            let flags = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
            let mode = unsafe { bpf_probe_read_user((how + 8) as *const u64) }.unwrap_or(0);
            (flags, mode as u32)
        }
        OpenSyscall::Openat => (field(ctx, arg(2)) & 0xffff_ffff, field(ctx, arg(3)) as u32),
        OpenSyscall::Open => (field(ctx, arg(1)) & 0xffff_ffff, field(ctx, arg(2)) as u32),
    };
    let pending = PendingPathCall {
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        filename,
        flags,
        mode,
        dfd,
        syscall: syscall as u16,
        _pad: [0; 3],
    };
    pending::save(&PENDING_OPEN, tid, pending);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    remember(&ctx, OpenSyscall::Openat, Some(arg(0)), arg(1))
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    remember(&ctx, OpenSyscall::Openat2, Some(arg(0)), arg(1))
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    remember(&ctx, OpenSyscall::Open, None, arg(0))
}

fn report(ctx: &TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    let fixed = core::mem::size_of::<OpenEvent>();
    let Some(exit) = path_call::exit(ctx, &PENDING_OPEN, tid, fixed) else { return 0 };
    let call = exit.call;
    let (ino, dev) = file_id(&config().kernel, exit.ret);
    put_fixed(
        exit.buf,
        OpenEvent {
            header: header_at(EventKind::Open, pid, tid, exit.ts_ns),
            ret: exit.ret,
            duration_ns: exit.duration_ns,
            flags: call.flags,
            mode: call.mode,
            dfd: call.dfd,
            syscall: call.syscall,
            path_len: exit.path_len as u16,
            dir_len: exit.dir_len as u16,
            dir_flags: exit.dir_flags,
            ino,
            dev,
            _pad: 0,
        },
    );
    send(exit.buf, fixed + exit.path_len + exit.dir_len, EventKind::Open);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    report(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    report(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    report(&ctx)
}
